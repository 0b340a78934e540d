"""Image dedup: exact bytes, pHash within a Hamming distance, SemDeDup, hostile images."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFilter

from curation import storage
from curation.dedup.images import IMAGE_DUPLICATES, compute_image_keys, dedup_images, image_key, plan_image_dedup
from tests.images import png_claiming


def _picture(seed: int, size: int = 256) -> Image.Image:
    """A deterministic 'photo': coloured shapes on a gradient, slightly blurred."""
    rng = np.random.default_rng(seed)
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(10, size // 3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image.filter(ImageFilter.GaussianBlur(2))


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture
def pairs() -> pa.Table:
    a, b, c = _picture(1), _picture(2), _picture(3)
    rows = [
        ("p10", _encode(a)),  # original
        ("p03", _encode(a)),  # the same bytes: exact duplicate (and the smaller pair_id)
        ("p11", _encode(a, "JPEG", quality=60)),  # re-encoded: same picture, other bytes
        ("p12", _encode(a.resize((180, 180)), "JPEG", quality=85)),  # resized
        ("p20", _encode(b)),
        ("p30", _encode(c, "WEBP")),
        ("p40", b"\xff\xd8\xff\xe0 not really a jpeg"),  # undecodable
        ("p41", _encode(b, "JPEG")[:300]),  # truncated
        ("p50", png_claiming(40_000, 40_000)),  # decompression bomb: 1.6 G pixels claimed
        ("p60", None),  # not fetched: no bytes, left alone
    ]
    return pa.table({"pair_id": [r[0] for r in rows], "image": pa.array([r[1] for r in rows], pa.binary())})


def test_exact_perceptual_and_hostile_images(pairs, build_config):
    dups = dedup_images(pairs, build_config())
    assert dups.schema == IMAGE_DUPLICATES
    got = {r["pair_id"]: (r["kept_pair_id"], r["reason"]) for r in dups.to_pylist()}
    assert got == {
        "p10": ("p03", "dup_image_exact"),
        "p11": ("p03", "dup_image_phash"),
        "p12": ("p03", "dup_image_phash"),
        "p40": (None, "image_undecodable"),
        "p41": (None, "image_undecodable"),
        "p50": (None, "image_too_large"),
    }


def test_phash_distance_is_the_knob(pairs, build_config):
    strict = dedup_images(pairs, build_config(dedup={"image_phash_distance": 0}))
    loose = dedup_images(pairs, build_config(dedup={"image_phash_distance": 16}))
    count = lambda t: sum(r == "dup_image_phash" for r in t["reason"].to_pylist())  # noqa: E731
    assert count(strict) <= 2 <= count(loose)
    # Different pictures are far apart: their pHashes differ in many bits.
    ha, _ = image_key(pairs["image"][0].as_py(), 10**8)
    hb, _ = image_key(pairs["image"][4].as_py(), 10**8)
    assert bin(ha ^ hb).count("1") > 16


def test_pixel_limit_guards_decoding_and_is_restored(build_config):
    big = _encode(Image.new("L", (3000, 3000)))
    assert image_key(big, 10_000_000)[1] is None
    assert image_key(big, 1_000_000) == (None, "image_too_large")
    table = pa.table({"pair_id": ["a"], "image": pa.array([big], pa.binary())})
    previous = Image.MAX_IMAGE_PIXELS
    dups = dedup_images(table, build_config(dedup={"image_max_pixels": 1_000_000}))
    assert dups.to_pylist() == [{"pair_id": "a", "kept_pair_id": None, "reason": "image_too_large"}]
    assert Image.MAX_IMAGE_PIXELS == previous


def test_semdedup_drops_close_embeddings_inside_clusters(build_config):
    rng = np.random.default_rng(0)
    dim, centres = 64, rng.normal(size=(20, 64))
    rows, truth = [], {}
    for k, centre in enumerate(centres):
        base = centre / np.linalg.norm(centre)
        rows.append((f"c{k:02d}-0", base))
        for j in range(1, 4):  # three near copies: cosine ~0.999 with the base
            rows.append((f"c{k:02d}-{j}", base + rng.normal(scale=0.004, size=dim)))
            truth[f"c{k:02d}-{j}"] = f"c{k:02d}-0"
        far = rng.normal(size=dim)  # same cluster region, not a duplicate
        rows.append((f"c{k:02d}-9", base + 0.6 * far / np.linalg.norm(far)))
    images = [_encode(_picture(100 + i, 64)) for i in range(len(rows))]  # all different pictures
    table = pa.table(
        {
            "pair_id": [r[0] for r in rows],
            "image": pa.array(images, pa.binary()),
            "clip_embedding": pa.array([r[1].astype(np.float32).tolist() for r in rows], pa.list_(pa.float32())),
        }
    )
    cfg = build_config(dedup={"semdedup": True, "semdedup_eps": 0.01, "semdedup_clusters": 10, "image_phash_distance": 0})
    dups = dedup_images(table, cfg)
    semantic = {r["pair_id"]: r["kept_pair_id"] for r in dups.to_pylist() if r["reason"] == "dup_semantic"}
    assert semantic == truth
    # Off by default.
    assert not any(r == "dup_semantic" for r in dedup_images(table, build_config())["reason"].to_pylist())


def test_keys_then_plan_over_shards_in_any_order(pairs, build_config, tmp_path):
    cfg = build_config()
    shards = []
    for i in range(2):
        uri = str(tmp_path / "pairs" / f"{i}.parquet")
        storage.write_table(uri, pairs.take(list(range(i, pairs.num_rows, 2))))
        shards.append(uri)
    keys = []
    for i, uri in enumerate(shards):
        keys.append(str(tmp_path / "keys" / f"{i}.parquet"))
        stats = compute_image_keys([uri], keys[-1], cfg)
        assert stats.rows_in == 5
    plan_image_dedup(keys, str(tmp_path / "a.parquet"), cfg)
    plan_image_dedup(keys[::-1], str(tmp_path / "b.parquet"), cfg)
    a = storage.read_table(str(tmp_path / "a.parquet"))
    assert a.equals(storage.read_table(str(tmp_path / "b.parquet")))
    assert a.equals(dedup_images(pairs, cfg))
    assert "image" not in storage.read_table(keys[0]).column_names  # the bytes stay behind


def test_phash_search_is_exact_within_the_distance():
    """Pigeonhole candidates + popcount check, against brute force on 64-bit hashes."""
    from curation.dedup.images import _phash_clusters

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    flips = [np.uint64(0)]
    for bits in (1, 3, 4, 5):  # copies with this many bits flipped: 4 is in, 5 is out
        mask = np.zeros(500, np.uint64)
        for _ in range(bits):
            mask |= np.uint64(1) << rng.integers(0, 64, 500).astype(np.uint64)
        flips.append(mask)
    hashes = np.concatenate([base, *(base[:500] ^ f for f in flips[1:]), np.zeros(50, np.uint64)])
    root = _phash_clusters(hashes, 4)
    # Brute force over the same hashes: union-find of every pair within 4 bits.
    parent = list(range(len(hashes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    near = [(i, j) for i in range(500) for j in range(3000, len(hashes)) if bin(int(hashes[i] ^ hashes[j])).count("1") <= 4]
    near += [
        (i, j)
        for i in range(3000, len(hashes))
        for j in range(i + 1, len(hashes))
        if bin(int(hashes[i] ^ hashes[j])).count("1") <= 4
    ]
    for i, j in near:
        parent[find(j)] = find(i)
    groups: dict[int, int] = {}
    expected = [groups.setdefault(find(i), i) for i in range(len(hashes))]
    assert root.tolist() == expected
