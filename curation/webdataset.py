"""WebDataset tar shards of image-text pairs, the layout open_clip's training loader reads.

Input: Arrow batches of the pairs table (schema.PAIRS, plus score columns): at least `pair_id`,
`caption` and `image` (bytes); rows whose `status` (when there) is not "ok" are not published.

Each sample is `{key}.jpg|png|webp` (the image bytes as fetched), `{key}.txt` (the caption) and
`{key}.json` (the other scalar columns, plus the image's size read from its header). Keys contain
no dots (WebDataset splits a member name at its first dot) and no slashes. Beside each `NNNNN.tar`
sits `NNNNN.parquet`, the same rows without the image bytes but with every column (embeddings
too), as img2dataset does, and the folder holds `sizes.json` (`{"00000.tar": samples, ...}`),
which open_clip's `get_dataset_size` reads.

Tars are deterministic: members in row order, mtime 0, uid/gid 0, no user names. Rows that cannot
be published are counted with a reason: `not_fetched` (status other than ok), `no_image`,
`empty_caption`, `bad_image` (not a JPEG, PNG or WebP, or an unreadable header), `image_too_large`
(decompression-bomb guard, from the header only: no pixel is decoded) and `duplicate_pair_id`.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.config import PublishConfig
from curation.errors import ConfigError
from curation.reshard import ParquetFileWriter, ParquetLayout
from curation.stats import StageStats

REQUIRED = ("pair_id", "caption", "image")
# Columns this writer derives from the published bytes; same-named input columns are replaced.
DERIVED = ("key", "image_ext", "image_width", "image_height", "image_bytes")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
SIZES = "sizes.json"


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def sample_key(pair_id: str) -> str:
    """The sample's WebDataset key: `pair_id` when it is already safe, else its xxh128 (hex)."""
    return pair_id if _SAFE_KEY.match(pair_id) else xxhash.xxh3_128_hexdigest(pair_id.encode())


def key_of(member_name: str) -> str:
    """`abc.jpg` -> `abc` (WebDataset's rule: the key ends at the first dot of the base name)."""
    return member_name.rsplit("/", 1)[-1].split(".", 1)[0]


def image_header(data: bytes, max_pixels: int) -> tuple[str, int, int] | str:
    """(extension, width, height) from the header, or the drop reason. Decodes no pixels."""
    from PIL import Image, UnidentifiedImageError

    ext = _sniff(data)
    if ext is None:
        return "bad_image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                fmt = image.format
    except Image.DecompressionBombError:  # PIL's own limit (2x MAX_IMAGE_PIXELS), from the header
        return "image_too_large"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "bad_image"
    if width * height > max_pixels:
        return "image_too_large"
    if fmt != _FORMATS[ext] or width <= 0 or height <= 0:
        return "bad_image"
    return ext, width, height


@dataclass(frozen=True)
class WdsLayout:
    shard_rows: int = 10_000
    shard_bytes: int = 2**30
    max_image_pixels: int = 89_478_485

    @classmethod
    def from_config(cls, publish: PublishConfig) -> WdsLayout:
        return cls(publish.wds_shard_rows, publish.wds_shard_bytes, publish.max_image_pixels)


def _meta_rows(meta_table: pa.Table, segment: list[tuple[int, str, str, int, int, int]]) -> pa.Table:
    """The metadata rows of `segment` (kept rows: index, key, format, width, height, image bytes)."""
    index, key, ext, width, height, size = zip(*segment, strict=True)
    table = meta_table.take(pa.array(index, pa.int64()))
    table = table.drop_columns([c for c in DERIVED if c in table.column_names])
    return (
        table.append_column("key", pa.array(key, pa.string()))
        .append_column("image_ext", pa.array(ext, pa.string()))
        .append_column("image_width", pa.array(width, pa.int32()))
        .append_column("image_height", pa.array(height, pa.int32()))
        .append_column("image_bytes", pa.array(size, pa.int64()))
    )


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass
class WdsShard:
    tar: Path
    meta: Path
    rows: int


class WebDatasetWriter:
    """Streams pair batches into numbered tar shards (+ metadata Parquet), rolling over by rows or bytes."""

    def __init__(
        self,
        out_dir: Path,
        layout: WdsLayout,
        meta_layout: ParquetLayout,
        stats: StageStats,
        on_shard: Callable[[WdsShard], None] | None = None,
    ):
        self.out_dir = out_dir
        self.layout = layout
        self.meta_layout = meta_layout
        self.stats = stats
        self.on_shard = on_shard
        self.shards: list[WdsShard] = []
        self._seen: set[str] = set()
        self._tar: tarfile.TarFile | None = None
        self._rows = 0
        self._meta: list[pa.Table] = []
        out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def sizes(self) -> dict[str, int]:
        return {shard.tar.name: shard.rows for shard in self.shards}

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ConfigError(f"image-text pairs lack columns {missing}; expected at least {list(REQUIRED)}")
        self.stats.rows_in += table.num_rows
        n = table.num_rows
        reason = np.full(n, "", dtype=object)
        if "status" in table.column_names:
            fetched = pc.fill_null(pc.equal(table["status"], "ok"), False).to_numpy(zero_copy_only=False)
            reason[~fetched] = "not_fetched"
        has_image = pc.fill_null(pc.greater(pc.binary_length(table["image"]), 0), False).to_numpy(zero_copy_only=False)
        reason[(reason == "") & ~has_image] = "no_image"
        caption_ok = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["caption"])), 0), False)
        reason[(reason == "") & ~caption_ok.to_numpy(zero_copy_only=False)] = "empty_caption"

        meta_table = table.drop_columns(["image"])
        # {key}.json: scalar columns only (an embedding belongs in the metadata Parquet, not in every sample).
        scalar = [f.name for f in meta_table.schema if not pa.types.is_nested(f.type) and f.name not in DERIVED]
        rows = meta_table.select(scalar).to_pylist()  # per-row Python: tar members have no columnar form
        images = table["image"]
        segment: list[tuple[int, str, str, int, int, int]] = []  # kept rows of the open shard
        for i, row in enumerate(rows):
            if reason[i]:
                continue
            key = sample_key(str(row["pair_id"]))
            if key in self._seen:
                reason[i] = "duplicate_pair_id"
                continue
            data = images[i].as_py()
            header = image_header(data, self.layout.max_image_pixels)
            if isinstance(header, str):
                reason[i] = header
                continue
            ext, width, height = header
            self._seen.add(key)
            self._add_sample(key, ext, data, row, width, height)
            segment.append((i, key, ext, width, height, len(data)))
            if self._rows >= self.layout.shard_rows or self._tar_bytes() >= self.layout.shard_bytes:
                self._meta.append(_meta_rows(meta_table, segment))
                segment = []
                self._close_shard()
        if segment:
            self._meta.append(_meta_rows(meta_table, segment))
        self.stats.rows_out += int((reason == "").sum())
        self.stats.drop_each(reason[reason != ""])

    def _add_sample(self, key: str, ext: str, image: bytes, row: dict, width: int, height: int) -> None:
        if self._tar is None:
            path = self.out_dir / f"{len(self.shards):05d}.tar"
            self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        caption = str(row["caption"]).encode()
        derived = {"key": key, "image_ext": ext, "image_width": width, "image_height": height, "image_bytes": len(image)}
        meta = json.dumps({**row, **derived}, sort_keys=True, default=str).encode()
        for name, payload in ((f"{key}.{ext}", image), (f"{key}.txt", caption), (f"{key}.json", meta)):
            self._tar.addfile(_tarinfo(name, len(payload)), io.BytesIO(payload))
        self._rows += 1

    def _tar_bytes(self) -> int:
        return self._tar.fileobj.tell() if self._tar is not None and self._tar.fileobj is not None else 0

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        tar_path = Path(self._tar.name)
        self._tar.close()
        meta_path = tar_path.with_suffix(".parquet")
        meta = pa.concat_tables(self._meta, promote_options="permissive")
        writer = ParquetFileWriter(meta_path, meta.schema, self.meta_layout)
        for batch in meta.to_batches():
            writer.add(batch)
        writer.close()
        shard = WdsShard(tar_path, meta_path, self._rows)
        self.shards.append(shard)
        self._tar, self._rows, self._meta = None, 0, []
        if self.on_shard is not None:
            self.on_shard(shard)

    def close(self) -> list[WdsShard]:
        """Finish the last shard and write sizes.json; returns every shard in order."""
        self._close_shard()
        (self.out_dir / SIZES).write_text(json.dumps(self.sizes, indent=2, sort_keys=True) + "\n")
        return self.shards


def tar_keys(path: Path) -> list[str]:
    """Sample keys of a tar shard, in order."""
    keys: list[str] = []
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key = key_of(member.name)
            if not keys or keys[-1] != key:
                keys.append(key)
    return keys


def filter_tar(src: Path, dst: Path, drop: set[str]) -> int:
    """Copy tar shard `src` to `dst` without the samples whose key is in `drop`; returns samples kept."""
    kept: list[str] = []
    with tarfile.open(src, "r") as tar_in, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tar_out:
        for member in tar_in:
            key = key_of(member.name)
            if key in drop:
                continue
            payload = tar_in.extractfile(member)
            assert payload is not None  # regular files only: the writer writes nothing else
            tar_out.addfile(_tarinfo(member.name, member.size), payload)
            if not kept or kept[-1] != key:
                kept.append(key)
    return len(kept)
