"""The ``futures`` config section (off by default: the original config behaves as before)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class FuturesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    #: Funding rate history (archive, then REST) for every configured symbol.
    funding_rates: bool = False
    #: Mark-price / index-price / premium-index klines for every configured pair.
    mark_price: bool = False
    index_price: bool = False
    premium_index: bool = False
    #: The sibling topic the futures records travel on (never the klines topic).
    topic: str = "klines.futures"
    #: Rows per /fapi/v1/fundingRate page (the exchange's maximum is 1000).
    funding_page_limit: Annotated[int, Field(ge=1, le=1000)] = 1000

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not _TOPIC_RE.fullmatch(v):
            raise ValueError("a topic name is 1-249 characters of a-z A-Z 0-9 . _ -")
        return v

    @property
    def enabled(self) -> bool:
        """Any futures kind on (the topic, the sink path and replay are needed)."""
        return self.funding_rates or self.mark_price or self.index_price or self.premium_index

    def sink_group(self, sink_group: str) -> str:
        """The consumer group of the futures sink path: the sink's, suffixed."""
        return f"{sink_group}.futures"
