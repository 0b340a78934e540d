"""WebDataset shards of image-text pairs: layout, drop reasons, determinism, and open_clip's loader reading them."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from argparse import Namespace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.reshard import ParquetLayout
from curation.stats import StageStats
from curation.webdataset import SIZES, WdsLayout, WebDatasetWriter, sample_key, tar_keys

# The columns of schema.PAIRS (after fetch_images) and PAIR_SCORES that publishing touches.
PAIRS = pa.schema(
    [
        pa.field("pair_id", pa.string()),
        pa.field("doc_id", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("image_url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("status", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("image_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("clip_score", pa.float32()),
        pa.field("clip_embedding", pa.list_(pa.float32())),
    ]
)


def image_bytes(seed: int, size: tuple[int, int], fmt: str, noise: bool = False) -> bytes:
    """A real JPEG or PNG: a colour gradient, or random noise (incompressible, for large files)."""
    rng = np.random.default_rng(seed)
    w, h = size
    if noise:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        base = rng.integers(0, 256, 3)
        grad = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.5, 1, h)[:, None, None]
        pixels = (base * grad).astype(np.uint8).repeat(1, axis=2)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format=fmt)
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming 10^10 pixels: decoding it would exhaust memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def make_pairs(n: int = 24, noise: bool = False, size: tuple[int, int] = (64, 48)) -> pa.Table:
    """`n` good pairs (JPEG and PNG alternating) with captions, ids, URLs and a score."""
    rows = []
    for i in range(n):
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        rows.append(
            {
                "pair_id": f"{i:032x}",
                "doc_id": f"{i // 4:032x}",
                "page_url": f"https://www.example.org/page/{i // 4}",
                "image_url": f"https://img.example.org/{i}.{'jpg' if fmt == 'JPEG' else 'png'}",
                "caption": f"a photo number {i} of a red bicycle leaning on a wall",
                "status": "ok",
                "image": image_bytes(i, size, fmt, noise),
                "image_format": fmt,
                "width": 300,  # the <img> width attribute, not the image's size
                "clip_score": 0.2 + 0.01 * i,
                "clip_embedding": [0.5, 0.5, 0.5, 0.5],
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIRS)


def bad_pairs() -> pa.Table:
    """One row per way a pair cannot be published."""
    good = image_bytes(99, (32, 32), "PNG")
    base = {"doc_id": "d", "page_url": "p", "status": "ok", "image_format": "PNG", "width": None, "clip_score": 0.3}
    rows = [
        {"pair_id": "nocap", "image_url": "u1", "caption": "   ", "image": good},
        {"pair_id": "noimg", "image_url": "u2", "caption": "a cat", "image": None},
        {"pair_id": "timeout", "image_url": "u3", "caption": "a cat", "image": None, "status": "timeout"},
        {"pair_id": "gif", "image_url": "u4", "caption": "a cat", "image": b"GIF89a\x01\x00"},
        {"pair_id": "trunc", "image_url": "u5", "caption": "a cat", "image": b"\xff\xd8\xff\xe0"},
        {"pair_id": "bomb", "image_url": "u6", "caption": "a cat", "image": bomb_png()},
        {"pair_id": f"{0:032x}", "image_url": "u7", "caption": "dup id", "image": good},
        {"pair_id": "has.dots/and slash", "image_url": "u8", "caption": "odd id", "image": good},
    ]
    return pa.Table.from_pylist([base | row for row in rows], schema=PAIRS)


def write_shards(out: Path, tables: list[pa.Table], shard_rows: int = 10) -> tuple[WebDatasetWriter, StageStats]:
    stats = StageStats(stage="publish_pairs")
    writer = WebDatasetWriter(out, WdsLayout(shard_rows=shard_rows), ParquetLayout(), stats)
    for table in tables:
        for batch in table.to_batches(max_chunksize=7):
            writer.write(batch)
    writer.close()
    return writer, stats


def test_shards_layout_drops_and_sizes(tmp_path):
    _, stats = write_shards(tmp_path / "a", [make_pairs(24), bad_pairs()])
    assert stats.rows_in == 32 and stats.rows_out == 25 and stats.balanced()
    assert dict(stats.dropped) == {
        "not_fetched": 1,
        "empty_caption": 1,
        "no_image": 1,
        "bad_image": 2,
        "image_too_large": 1,
        "duplicate_pair_id": 1,
    }
    sizes = json.loads((tmp_path / "a" / SIZES).read_text())
    assert sizes == {"00000.tar": 10, "00001.tar": 10, "00002.tar": 5}
    keys = [k for name in sorted(sizes) for k in tar_keys(tmp_path / "a" / name)]
    assert len(keys) == len(set(keys)) == 25 and not any("." in k or "/" in k for k in keys)
    assert sample_key("has.dots/and slash") in keys  # unsafe ids become a hash key, the pair is kept
    with tarfile.open(tmp_path / "a" / "00000.tar") as tar:
        names = tar.getnames()
        assert names[:3] == [f"{0:032x}.jpg", f"{0:032x}.txt", f"{0:032x}.json"]
        assert {m.mtime for m in tar} == {0} and {m.uname for m in tar} == {""}
        meta = json.loads(tar.extractfile(names[2]).read())
        assert meta["caption"].startswith("a photo number 0") and meta["image_url"].endswith("/0.jpg")
        assert (meta["image_width"], meta["image_height"], meta["width"]) == (64, 48, 300)  # header size vs <img> attribute
        assert "image" not in meta and "clip_embedding" not in meta
    # Metadata beside each tar: the same rows without the image bytes.
    table = pq.read_table(tmp_path / "a" / "00002.parquet")
    assert table.num_rows == 5 and "image" not in table.column_names
    derived = {"key", "image_ext", "image_width", "image_height", "image_bytes"}
    assert derived | {"clip_score", "clip_embedding"} <= set(table.column_names)
    assert table["clip_embedding"][0].as_py() == [0.5] * 4


def test_shards_are_deterministic(tmp_path):
    write_shards(tmp_path / "a", [make_pairs(12)], shard_rows=5)
    write_shards(tmp_path / "b", [make_pairs(12)], shard_rows=5)
    for name in ("00000.tar", "00001.tar", "00002.tar", "00000.parquet", SIZES):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_webdataset_and_open_clip_loader_read_the_shards(tmp_path, monkeypatch):
    import open_clip_train.data as open_clip_data
    import torch
    import webdataset as wds
    from open_clip_train.data import get_wds_dataset

    pairs = make_pairs(24)
    write_shards(tmp_path, [pairs], shard_rows=10)
    pattern = str(tmp_path / "{00000..00002}.tar")

    # The plain reader, the way open_clip decodes: pilrgb images and the caption text.
    samples = list(wds.WebDataset(pattern, shardshuffle=False).decode("pilrgb").to_tuple("jpg;png", "txt", "json"))
    assert [s[1] for s in samples] == pairs["caption"].to_pylist()
    assert all(img.mode == "RGB" and img.size == (64, 48) for img, _, _ in samples)
    assert [s[2]["image_url"] for s in samples] == pairs["image_url"].to_pylist()

    # open_clip's own training loader: sample count from sizes.json, image transform, tokenizer.
    def preprocess(image):
        return torch.from_numpy(np.asarray(image.resize((32, 32)), dtype=np.float32)).permute(2, 0, 1) / 255

    from open_clip import tokenize as tokenizer  # the real CLIP BPE tokenizer (its vocabulary ships with open_clip)

    args = Namespace(
        train_data=pattern,
        val_data=None,
        train_num_samples=None,
        dataset_resampled=False,
        train_data_upsampling_factors=None,
        seed=0,
        batch_size=8,
        workers=0,
        world_size=1,
    )

    # open_clip 3.3's tar reader chokes on the end-of-shard marker webdataset >= 0.2.96 yields
    # (open_clip#935, webdataset#384); this is the fix those threads give: eof_value=None.
    def tarfile_to_samples_nothrow(src, handler=open_clip_data.log_and_continue):
        files = open_clip_data.tar_file_expander(open_clip_data.url_opener(src, handler=handler), handler=handler, eof_value=None)
        return open_clip_data.group_by_keys_nothrow(files, handler=handler)

    monkeypatch.setattr(open_clip_data, "tarfile_to_samples_nothrow", tarfile_to_samples_nothrow)
    info = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer)
    assert info.dataloader.num_samples == 24  # read from sizes.json
    images, texts = next(iter(info.dataloader))
    assert images.shape == (8, 3, 32, 32) and texts.shape == (8, 77)
    expected = {tuple(t.tolist()) for t in tokenizer(pairs["caption"].to_pylist())}
    assert {tuple(t.tolist()) for t in texts} <= expected


def test_missing_columns_is_a_contract_error(tmp_path):
    from curation.errors import ConfigError

    stats = StageStats(stage="publish_pairs")
    writer = WebDatasetWriter(tmp_path, WdsLayout(), ParquetLayout(), stats)
    with pytest.raises(ConfigError, match="caption"):
        writer.write(pa.table({"pair_id": ["a"], "url": ["u"], "image": [b"x"]}))
