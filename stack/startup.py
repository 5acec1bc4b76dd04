"""Pure judgement of freshly started programs: up, still starting, or failing.

``python -m stack up`` polls supervisord after starting the services and feeds each snapshot
(``getAllProcessInfo``) to a ``StartWatch``: a program is up once it has run ``hold_s``
seconds without exiting; it failed when supervisord gave up on it (FATAL) or it exited
``max_exits`` times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EXITED_STATES = ("BACKOFF", "EXITED", "FATAL")


@dataclass(slots=True)
class StartWatch:
    names: tuple[str, ...]
    hold_s: float = 8.0
    max_exits: int = 2
    #: (program, start time) of every exit seen, so one exit is counted once.
    _exits: set[tuple[str, int]] = field(default_factory=set)

    def observe(self, infos: Mapping[str, Mapping[str, Any]]) -> tuple[set[str], dict[str, str]]:
        """``(up, failed)`` for this snapshot; ``failed`` maps a program to the reason."""
        up: set[str] = set()
        failed: dict[str, str] = {}
        for name in self.names:
            info = infos.get(name)
            if info is None:
                failed[name] = "not known to supervisord"
                continue
            state = str(info.get("statename", "?"))
            if state in EXITED_STATES:
                self._exits.add((name, int(info.get("start", 0))))
            exits = self.exits(name)
            status = info.get("exitstatus")
            # supervisord reports 0 for a process it has not reaped yet: say nothing then.
            last = f", last exit status {status}" if status else ""
            if state == "FATAL":
                failed[name] = f"kept exiting at start (FATAL{last})"
            elif exits >= self.max_exits:
                failed[name] = f"exited {exits} times{last}"
            elif state == "RUNNING" and _uptime(info) >= self.hold_s:
                up.add(name)
        return up, failed

    def exits(self, name: str) -> int:
        return sum(1 for program, _ in self._exits if program == name)


def _uptime(info: Mapping[str, Any]) -> float:
    return float(info.get("now", 0)) - float(info.get("start", 0))


def last_lines(lines: Iterable[str], count: int) -> list[str]:
    """The last ``count`` lines (a log's tail), without their line ends."""
    tail: list[str] = []
    for line in lines:
        tail.append(line.rstrip("\n"))
        if len(tail) > count:
            del tail[0]
    return tail
