"""The ``futures`` config section (off by default: the original config behaves as before)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Kinds named by the section whose sources are not built yet: accepted only as false, so no
#: key is taken and then silently ignored.
NOT_YET = ("mark_price", "index_price", "premium_index")


class FuturesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    #: Funding rate history (archive, then REST) for every configured symbol.
    funding_rates: bool = False
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

    @model_validator(mode="after")
    def _built_kinds(self) -> FuturesConfig:
        for kind in NOT_YET:
            if getattr(self, kind):
                raise ValueError(
                    f"{kind}: not available in this version (only funding_rates is); set false"
                )
        return self

    @property
    def enabled(self) -> bool:
        return self.funding_rates

    def sink_group(self, sink_group: str) -> str:
        """The consumer group of the futures sink path: the sink's, suffixed."""
        return f"{sink_group}.futures"
