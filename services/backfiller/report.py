"""The backfiller's run summary: plain counters of this run, printed as one ``key=value`` line
(read by operators, the e2e tests and the bench)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Summary:
    candles: int = 0
    archive_candles: int = 0
    empty_ranges: int = 0
    gap_holes: int = 0
    corrections: int = 0
    requests: int = 0
    klines_requests: int = 0
    weight: int = 0
    rate_limited: int = 0
    banned: int = 0
    retries: int = 0
    archive_downloaded: int = 0
    archive_cached: int = 0
    archive_missing: int = 0
    archive_corrupt: int = 0
    archive_corrections: int = 0  # cached files whose published checksum had changed
    audits: int = 0
    audit_files_reingested: int = 0
    audit_candles_corrected: int = 0
    seconds: float = 0.0
    failed_pairs: list[str] = field(default_factory=list)
    unlisted_pairs: list[str] = field(default_factory=list)
    #: The publisher's seconds per step (wall, CPU): qryptify.publish.PUBLISH_STEPS.
    publish_times: dict[str, tuple[float, float]] = field(default_factory=dict)

    def line(self) -> str:
        """One line of ``key=value`` pairs (machine-readable too)."""
        rate = self.candles / self.seconds if self.seconds > 0 else 0.0
        fields = {
            "candles": self.candles,
            "archive_candles": self.archive_candles,
            "empty_ranges": self.empty_ranges,
            "gap_holes": self.gap_holes,
            "corrections": self.corrections,
            "requests": self.requests,
            "klines_requests": self.klines_requests,
            "retries": self.retries,
            "http_429": self.rate_limited,
            "http_418": self.banned,
            "weight": self.weight,
            "archive_downloaded": self.archive_downloaded,
            "archive_cached": self.archive_cached,
            "archive_missing": self.archive_missing,
            "archive_corrupt": self.archive_corrupt,
            "archive_corrections": self.archive_corrections,
            "audits": self.audits,
            "audit_files_reingested": self.audit_files_reingested,
            "audit_candles_corrected": self.audit_candles_corrected,
            "seconds": f"{self.seconds:.1f}",
            "candles_per_s": f"{rate:.0f}",
        }
        for step, (wall, cpu) in self.publish_times.items():
            fields[f"publish_{step}_wall_s"] = f"{wall:.3f}"
            fields[f"publish_{step}_cpu_s"] = f"{cpu:.3f}"
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        if self.failed_pairs:
            text += f" failed={','.join(self.failed_pairs)}"
        if self.unlisted_pairs:
            text += f" unlisted={','.join(self.unlisted_pairs)}"
        return f"backfill summary: {text}"
