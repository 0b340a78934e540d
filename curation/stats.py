"""StageStats: what a stage did to one shard (rows in/out, drops by reason, bytes, seconds).

Every output shard gets a sibling `*.stats.json`; the build sums them into the drop funnel.
Invariant: rows_in == rows_out + sum(dropped.values()). Nothing is lost without a reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("curation")

# Funnel stages in pipeline order: the documents chain, then the image-text pairs chain.
DOCUMENT_STAGES = ("ingest", "dedup", "filter", "score", "select")
PAIR_STAGES = ("ingest_pairs", "fetch_images", "clip", "pairs_dedup", "select_pairs")
FUNNEL_ORDER = (*DOCUMENT_STAGES, *PAIR_STAGES, "gate", "publish", "publish_pairs", "takedown")


@dataclass
class StageStats:
    stage: str
    shard: str = ""
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] += count

    def drop_each(self, reasons: Iterable[str]) -> None:
        """Count one drop per element: a column of per-row reasons (e.g. a numpy object array)."""
        self.dropped.update(str(r) for r in reasons)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rows_dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "shard": self.shard,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
            "outputs": self.outputs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageStats:
        return cls(**{**data, "dropped": Counter(data.get("dropped", {}))})

    @classmethod
    def total(cls, stage: str, parts: list[StageStats]) -> StageStats:
        """Sum of per-shard stats (seconds summed too: it is task time, not wall time)."""
        out = cls(stage=stage, shard="*")
        for part in parts:
            out.rows_in += part.rows_in
            out.rows_out += part.rows_out
            out.dropped.update(part.dropped)
            out.bytes_in += part.bytes_in
            out.bytes_out += part.bytes_out
            out.seconds += part.seconds
            out.outputs += part.outputs
        return out

    def summary(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.stage}[{self.shard}]: {self.rows_in} in, {self.rows_out} out, dropped: {drops} ({self.seconds:.1f}s)"


class Progress:
    """Logs one line per `every` seconds (rows, rows/s, drops) so a stuck task shows in the log."""

    def __init__(self, stats: StageStats, every: float = 30.0):
        self.stats = stats
        self.every = every
        self.start = self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.log(now)

    def log(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        s = self.stats
        log.info(
            "%s[%s] progress: %d rows in, %.0f rows/s, %d dropped %s",
            s.stage,
            s.shard,
            s.rows_in,
            s.rows_in / elapsed,
            s.rows_dropped,
            dict(s.dropped),
        )
