"""CLIP scoring: open_clip preprocessing parity, bad images as counted drops, model loading paths."""

from __future__ import annotations

import io
import random

import numpy as np
import open_clip
import pyarrow as pa
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from curation import layout, storage
from curation.config import ClipConfig, load_config
from curation.errors import ConfigError
from curation.models import ModelRef
from curation.scoring.clip import (
    SCORES,
    ClipScorer,
    ImageRejected,
    Preprocess,
    decode_image,
    error_counts,
    load_clip,
    register_model_config,
    save_checkpoint,
    score_pairs_shard,
    tokenize,
    torch_threads,
)
from curation.scoring.filter_network import TINY_CLIP_CONFIG
from curation.scoring.scenes import encode_jpeg, make_seed_pairs, random_scene, render_scene
from tests.images import png_claiming

TINY = register_model_config(TINY_CLIP_CONFIG)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and do not crawl when other jobs share the cores."""
    with torch_threads(1):
        yield


def tiny_config(**overrides) -> ClipConfig:
    """The tiny architecture with random weights (allowed only with allow_random_weights)."""
    return ClipConfig(model=TINY, pretrained=None, device="cpu", batch_size=8, decode_workers=2, **overrides)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> ModelRef:
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    pre = Preprocess.from_open_clip(dict(model.visual.preprocess_cfg))
    return save_checkpoint(model, TINY_CLIP_CONFIG, pre, str(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("mode", "size"),
    [("shortest", (32, 32)), ("shortest", (24, 40)), ("squash", (32, 32)), ("longest", (32, 32))],
)
def test_preprocessing_matches_open_clip_eval_transform(mode, size):
    cfg = PreprocessCfg(size=size, resize_mode=mode)
    reference = image_transform_v2(cfg, is_train=False)
    ours = Preprocess.from_open_clip({"size": size, "resize_mode": mode})
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    for seed, (width, height) in enumerate([(64, 48), (37, 80), (32, 32), (100, 100), (20, 50)]):
        data = noise_png(width, height, seed)
        pixels = torch.from_numpy(np.array(decode_image(data, ours, max_pixels=10**6))).permute(2, 0, 1).float() / 255
        expected = reference(Image.open(io.BytesIO(data)))
        assert expected.shape == (3, *size)
        torch.testing.assert_close((pixels - mean) / std, expected, atol=1e-5, rtol=0)


def test_jpeg_draft_decodes_big_jpegs_close_to_a_full_decode():
    """The reduced-scale JPEG decode (jpeg_draft) changes pixels by about a grey level, no more."""
    rng = random.Random(0)
    pre = Preprocess.from_open_clip({"size": 32})
    for _ in range(5):
        scene = render_scene(random_scene(rng), rng, 64).resize((640, 480), Image.Resampling.BICUBIC)
        data = encode_jpeg(scene)
        fast = decode_image(data, pre, 10**7, jpeg_draft=True).astype(float)
        full = decode_image(data, pre, 10**7, jpeg_draft=False).astype(float)
        assert fast.shape == full.shape == (32, 32, 3)
        assert np.abs(fast - full).mean() < 2.0  # grey levels out of 255


def test_fast_tokenize_gives_open_clips_token_ids():
    tokenizer = open_clip.get_tokenizer(TINY)  # SimpleTokenizer, context length 20
    texts = ["a red circle", "", "Ünïcödé &amp; <b>html</b>  spaces", "word " * 40, "two black crosses at the top"]
    assert torch.equal(tokenize(tokenizer, texts), tokenizer(texts))
    assert tokenize(tokenizer, texts)[3, -1].item() == tokenizer.eot_token_id  # truncated, still terminated


def test_bad_images_are_counted_with_a_reason_never_raised():
    good = make_seed_pairs(3, seed=1)["image"].to_pylist()
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, format="PNG")  # 4 Mpx of zeros in a few KB
    cases = {
        "good-0": (good[0], None),
        "random-bytes": (b"this is not an image at all" * 10, "image_undecodable"),
        "truncated-jpeg": (good[1][: len(good[1]) // 2], "image_undecodable"),
        "empty": (b"", "image_missing"),
        "null": (None, "image_missing"),
        "tiff-not-allowed": (tiff.getvalue(), "image_undecodable"),
        "real-bomb": (bomb.getvalue(), "image_too_large"),
        "header-bomb": (png_claiming(100_000, 100_000), "image_too_large"),
        "good-2": (good[2], None),
    }
    table = pa.table(
        {
            "pair_id": list(cases),
            "caption": ["a red circle on the left on a blue background"] * len(cases),
            "image": pa.array([data for data, _ in cases.values()], pa.binary()),
        }
    )
    no_caption = pa.table({"pair_id": ["no-caption"], "caption": pa.array([None], pa.string()), "image": [good[0]]})
    table = pa.concat_tables([table, no_caption])
    scorer = ClipScorer(tiny_config(max_image_pixels=1_000_000), allow_random_weights=True)
    scores = scorer.score(table)
    assert scores.schema.equals(SCORES, check_metadata=False)
    assert scores["pair_id"].to_pylist() == table["pair_id"].to_pylist()  # row order kept
    expected = [reason for _, reason in cases.values()] + ["caption_missing"]
    assert scores["image_error"].to_pylist() == expected
    assert error_counts(scores) == {"image_undecodable": 3, "image_missing": 2, "image_too_large": 2, "caption_missing": 1}
    details = dict(zip(scores["pair_id"].to_pylist(), scores["image_error_detail"].to_pylist(), strict=True))
    assert "2000x2000 pixels > max_image_pixels 1000000" in details["real-bomb"]
    assert "pixels" in details["header-bomb"]  # past Pillow's own limit: refused inside Image.open
    scored = [i for i, reason in enumerate(expected) if reason is None]
    assert scores["clip_score"].null_count == len(expected) - len(scored)
    embeddings = np.array(scores["clip_embedding"].take(scored).to_pylist())
    assert embeddings.shape == (len(scored), scorer.clip.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    cosine = (embeddings * embeddings).sum(1)  # sanity: a score is a cosine in [-1, 1]
    assert np.all(np.abs(scores["clip_score"].take(scored).to_numpy()) <= 1.0) and np.allclose(cosine, 1.0, atol=1e-5)
    assert scores["nsfw_score"].null_count == scores.num_rows  # no head configured


def test_decode_image_rejects_before_decoding_a_bomb():
    pre = Preprocess.from_open_clip({"size": 32})
    with pytest.raises(ImageRejected) as caught:
        decode_image(png_claiming(50_000, 50_000), pre, max_pixels=89_478_485)
    assert caught.value.reason == "image_too_large"


def test_batches_threads_and_processes_do_not_change_the_scores(tiny_checkpoint):
    pairs = make_seed_pairs(37, seed=3)
    inline = ClipScorer(ClipConfig(checkpoint=tiny_checkpoint, device="cpu", batch_size=37, decode_workers=0)).score(pairs)
    threaded = ClipScorer(ClipConfig(checkpoint=tiny_checkpoint, device="cpu", batch_size=5, decode_workers=3)).score(pairs)
    processes = ClipScorer(
        ClipConfig(checkpoint=tiny_checkpoint, device="cpu", batch_size=5, decode_workers=2, decode_backend="processes")
    ).score(pairs)
    for other in (threaded, processes):
        np.testing.assert_allclose(other["clip_score"].to_numpy(), inline["clip_score"].to_numpy(), atol=1e-5)
        assert other["pair_id"].equals(inline["pair_id"])


def test_checkpoint_with_wrong_sha256_fails_clearly(tiny_checkpoint):
    wrong = ModelRef(uri=tiny_checkpoint.uri, sha256="0" * 64)
    with pytest.raises(ConfigError, match=r"sha256 .* but the config expects 0{64}"):
        ClipScorer(ClipConfig(checkpoint=wrong, device="cpu"))


def test_checkpoint_that_needs_unpickling_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "curation-clip/1", "model": torch.nn.Linear(2, 2)}, path)  # a pickled module, not just tensors
    with pytest.raises(ConfigError, match="weights_only"):
        load_clip(ClipConfig(checkpoint=ModelRef(uri=str(path)), device="cpu"))


def test_plain_open_clip_state_dict_loads_with_the_configured_architecture(tiny_checkpoint, tmp_path):
    own = load_clip(ClipConfig(checkpoint=tiny_checkpoint, device="cpu"))
    plain = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(own.model.state_dict(), plain)
    loaded = load_clip(ClipConfig(model=TINY, checkpoint=ModelRef(uri=str(plain)), device="cpu"))
    pairs = make_seed_pairs(6, seed=4)
    a = ClipScorer(ClipConfig(checkpoint=tiny_checkpoint, device="cpu")).score(pairs)["clip_score"].to_numpy()
    b = ClipScorer(ClipConfig(model=TINY, checkpoint=ModelRef(uri=str(plain)), device="cpu")).score(pairs)["clip_score"]
    np.testing.assert_allclose(b.to_numpy(), a, atol=1e-6)
    assert loaded.model_id.startswith("sha256:") and loaded.model_id != own.model_id
    narrower = register_model_config({**TINY_CLIP_CONFIG, "embed_dim": 32})
    with pytest.raises(ConfigError, match=rf"into architecture clip\.model={narrower}"):
        load_clip(ClipConfig(model=narrower, checkpoint=ModelRef(uri=str(plain)), device="cpu"))


def test_model_is_loaded_once_per_process_per_spec(tiny_checkpoint):
    cfg = ClipConfig(checkpoint=tiny_checkpoint, device="cpu")
    assert load_clip(cfg) is load_clip(cfg.model_copy(update={"batch_size": 7}))  # batch size is not part of the model
    assert load_clip(cfg).model is ClipScorer(cfg).clip.model


@pytest.mark.parametrize(
    ("model", "pretrained"),
    [
        ("ViT-B-32", "laion2b_s34b_b79k"),  # LAION-2B: the model behind the 0.28 threshold
        ("hf-hub:apple/DFN2B-CLIP-ViT-L-14", None),  # DFN
        ("hf-hub:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", None),  # DataComp
    ],
)
def test_public_models_go_through_open_clip_and_fail_clearly_offline(model, pretrained):
    with pytest.raises(ConfigError, match=rf"cannot load CLIP model {model}.*clip.checkpoint"):
        load_clip(ClipConfig(model=model, pretrained=pretrained, device="cpu"))


def test_a_model_without_weights_is_refused_unless_asked_for():
    with pytest.raises(ConfigError, match="has no weights"):
        load_clip(tiny_config())
    assert load_clip(tiny_config(), allow_random_weights=True).embed_dim == TINY_CLIP_CONFIG["embed_dim"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_clip(ClipConfig(model=TINY, pretrained=None, device="cuda"), allow_random_weights=True)
    assert load_clip(ClipConfig(model=TINY, pretrained=None, device="auto"), allow_random_weights=True).precision == "fp32"


def test_missing_columns_are_a_contract_error(tiny_checkpoint):
    with pytest.raises(ConfigError, match=r"lacks \['image'\]"):
        ClipScorer(ClipConfig(checkpoint=tiny_checkpoint, device="cpu")).score(pa.table({"pair_id": ["a"], "caption": ["x"]}))


def test_stage_appends_scores_and_drops_unusable_rows_with_reasons(tiny_checkpoint, tmp_path):
    pairs = make_seed_pairs(20, seed=5)
    images = pairs["image"].to_pylist()
    images[3], images[7] = b"\xff\xd8\xff garbage", png_claiming(60_000, 60_000)
    pairs = pairs.set_column(2, "image", pa.array(images, pa.binary()))
    pairs = pairs.append_column("image_url", pa.array([f"https://example.com/{i}.jpg" for i in range(20)]))
    # As fetch_images writes them: every row, with its status; the failed ones it has counted itself.
    pairs = pairs.append_column("status", pa.array(["ok"] * 18 + ["timeout", "too_small"]))
    shard = str(tmp_path / "pairs" / "00000.parquet")
    storage.write_table(shard, pairs)
    clip = {"checkpoint": tiny_checkpoint.model_dump(), "device": "cpu"}
    cfg = load_config(overrides={"work_root": str(tmp_path / "work"), "clip": clip})
    output = str(tmp_path / "work" / "b1" / "clip" / "00000.parquet")

    stats = score_pairs_shard([shard], output, cfg)

    assert stats.balanced() and (stats.rows_in, stats.rows_out) == (18, 16)
    assert dict(stats.dropped) == {"image_undecodable": 1, "image_too_large": 1}
    out = storage.read_table(output)
    assert out.column_names == [*pairs.column_names, "clip_score", "clip_embedding", "nsfw_score"]
    assert out["clip_score"].null_count == 0 and out["clip_score"].type == pa.float32()
    assert {len(e) for e in out["clip_embedding"].to_pylist()} == {TINY_CLIP_CONFIG["embed_dim"]}
    dropped = storage.read_table(layout.dropped_uri(output))
    assert sorted(dropped["reason"].to_pylist()) == ["image_too_large", "image_undecodable"]
    assert set(dropped["url"].to_pylist()) == {"https://example.com/3.jpg", "https://example.com/7.jpg"}
    assert all(d.startswith("pair_id=") for d in dropped["detail"].to_pylist())
    # A rerun replaces the scores (no duplicated columns) and writes the same rows.
    again = score_pairs_shard([output], str(tmp_path / "rescored.parquet"), cfg)
    assert again.rows_out == 16 and storage.read_table(str(tmp_path / "rescored.parquet")).column_names == out.column_names


@pytest.mark.slow
def test_checkpoint_on_s3_is_fetched_verified_and_scored(s3_bucket, tiny_checkpoint):
    uri = f"s3://{s3_bucket}/models/filter/tiny.pt"
    storage.write_bytes(uri, storage.read_bytes(tiny_checkpoint.uri))
    pairs = make_seed_pairs(8, seed=6)
    local = ClipScorer(ClipConfig(checkpoint=tiny_checkpoint, device="cpu")).score(pairs)["clip_score"].to_numpy()
    remote = ClipScorer(ClipConfig(checkpoint=ModelRef(uri=uri, sha256=tiny_checkpoint.sha256), device="cpu"))
    np.testing.assert_allclose(remote.score(pairs)["clip_score"].to_numpy(), local, atol=1e-6)
    with pytest.raises(ConfigError, match="sha256"):
        load_clip(ClipConfig(checkpoint=ModelRef(uri=uri, sha256="1" * 64), device="cpu"))
