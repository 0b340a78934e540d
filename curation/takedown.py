"""Takedown blocklist: URLs and normalized-text hashes that must never be published again.

The blocklist lives under `state_root`, outside any build, so every later build's filter stage
drops matching documents (reason `takedown`) whatever crawl they come from again.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import BuildConfig
from curation.errors import ConfigError

BLOCKLIST = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False, metadata={"doc": "'url' or 'text_hash'"}),
        pa.field("value", pa.string(), nullable=False, metadata={"doc": "the URL or the 32-hex normalized-text hash"}),
        pa.field("ticket", pa.string(), metadata={"doc": "why: request id or reason, for audit"}),
        pa.field("added_at", pa.timestamp("us", tz="UTC"), metadata={"doc": "when it was added"}),
    ]
)
KINDS = ("url", "text_hash")


def blocklist_uri(cfg: BuildConfig) -> str:
    return storage.join(cfg.state_root, "takedown", "blocklist.parquet")


def load_blocklist(cfg: BuildConfig) -> pa.Table:
    uri = blocklist_uri(cfg)
    return storage.read_table(uri) if storage.exists(uri) else BLOCKLIST.empty_table()


def add_to_blocklist(cfg: BuildConfig, kind: str, values: list[str], ticket: str) -> int:
    """Add values (deduplicated) to the blocklist atomically; returns how many were new."""
    if kind not in KINDS:
        raise ConfigError(f"takedown kind must be one of {KINDS}, not {kind!r}")
    current = load_blocklist(cfg)
    known = set(current.filter(pc.equal(current["kind"], kind))["value"].to_pylist())
    new = sorted({v.strip() for v in values if v.strip()} - known)
    if new:
        now = dt.datetime.now(dt.UTC)
        added = pa.table(
            {"kind": [kind] * len(new), "value": new, "ticket": [ticket] * len(new), "added_at": [now] * len(new)},
            schema=BLOCKLIST,
        )
        storage.write_table(blocklist_uri(cfg), pa.concat_tables([current, added]))
    return len(new)


def blocked_mask(batch: pa.Table, blocklist: pa.Table) -> np.ndarray:
    """True for rows of a documents batch whose url or text_hash is on the blocklist."""
    mask = np.zeros(batch.num_rows, dtype=bool)
    for kind, column in (("url", "url"), ("text_hash", "text_hash")):
        values = blocklist.filter(pc.equal(blocklist["kind"], kind))["value"]
        if len(values):
            mask |= pc.is_in(batch[column], value_set=values.combine_chunks()).to_numpy(zero_copy_only=False)
    return mask
