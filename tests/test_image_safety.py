"""Image safety head on CLIP embeddings: trained on a stand-in unsafe pattern, loaded by ModelRef."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from curation import storage
from curation.cli import app
from curation.config import ClipConfig
from curation.errors import ConfigError
from curation.models import ModelRef
from curation.scoring.clip import ClipScorer, torch_threads
from curation.scoring.evaluation import roc_auc_split
from curation.scoring.image_safety import (
    LaionH14,
    artifact_uris,
    load_nsfw_head,
    make_safety_examples,
    train_demo_nsfw_head,
    train_nsfw_head,
)
from tests.test_filter_network import demo_network


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and do not crawl when other jobs share the cores."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def clip_cfg() -> ClipConfig:
    return ClipConfig(checkpoint=demo_network(), device="cpu", batch_size=64, decode_workers=1)


@pytest.fixture(scope="module")
def demo_head(clip_cfg, tmp_path_factory) -> ModelRef:
    return train_demo_nsfw_head(str(tmp_path_factory.mktemp("head") / "nsfw_head.pt"), clip_cfg, seed=0)


def as_pairs(images: pa.ChunkedArray) -> pa.Table:
    return pa.table({"pair_id": [str(i) for i in range(len(images))], "caption": ["a picture"] * len(images), "image": images})


def test_head_separates_the_stand_in_unsafe_pattern_on_fresh_images(clip_cfg, demo_head):
    report = json.loads(storage.read_bytes(artifact_uris(demo_head.uri)[1]))
    assert report["test"]["roc_auc"] >= 0.9 and report["embedding_model"] == f"sha256:{clip_cfg.checkpoint.sha256}"
    fresh = make_safety_examples(200, seed=77)
    scores = ClipScorer(clip_cfg.model_copy(update={"nsfw_head": demo_head})).score(as_pairs(fresh["image"]))
    nsfw = scores["nsfw_score"].to_numpy()
    unsafe = fresh["label"].to_numpy().astype(bool)
    auc = roc_auc_split(nsfw[unsafe], nsfw[~unsafe])
    print(f"stand-in unsafe pattern, fresh images: AUC {auc:.4f} ({unsafe.sum()} unsafe of {len(unsafe)})")
    assert auc >= 0.9
    assert np.all((nsfw >= 0) & (nsfw <= 1))


def test_head_with_wrong_sha256_is_refused(clip_cfg, demo_head):
    wrong = ModelRef(uri=demo_head.uri, sha256="f" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        ClipScorer(clip_cfg.model_copy(update={"nsfw_head": wrong}))


def test_head_trained_on_another_models_embeddings_is_refused(clip_cfg, tmp_path):
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(40, 64)), np.array([0, 1] * 20)
    ref, _ = train_nsfw_head(embeddings, labels, str(tmp_path / "other.pt"), embedding_model="ViT-B-32:laion2b_s34b_b79k")
    with pytest.raises(ConfigError, match="trained on embeddings of ViT-B-32:laion2b_s34b_b79k"):
        ClipScorer(clip_cfg.model_copy(update={"nsfw_head": ref}))


def test_laion_h14_detector_layout_loads_through_the_same_path(clip_cfg, tmp_path):
    torch.manual_seed(0)
    laion = LaionH14(1024).eval()
    path = tmp_path / "h14_nsfw.pth"
    torch.save(laion.state_dict(), path)  # the layout of LAION's released file
    head = load_nsfw_head(ModelRef(uri=str(path)))
    assert (head.embed_dim, head.output, head.embedding_model) == (1024, "raw", None)
    x = torch.nn.functional.normalize(torch.randn(5, 1024), dim=-1)
    with torch.inference_mode():
        expected = laion(x).squeeze(-1).clamp(0, 1)
    torch.testing.assert_close(head.score(x), expected)
    with pytest.raises(ConfigError, match="takes 1024-d embeddings but the CLIP model gives 64-d"):
        ClipScorer(clip_cfg.model_copy(update={"nsfw_head": ModelRef(uri=str(path))}))
    junk = tmp_path / "junk.pt"
    torch.save({"weight": torch.zeros(3)}, junk)
    with pytest.raises(ConfigError, match="neither"):
        load_nsfw_head(ModelRef(uri=str(junk)))


def test_cli_trains_a_head_from_labelled_image_files(clip_cfg, tmp_path):
    examples = make_safety_examples(160, seed=3)
    unsafe = examples["label"].to_numpy().astype(bool)
    storage.write_table(str(tmp_path / "unsafe.parquet"), examples.filter(pa.array(unsafe)))
    storage.write_table(str(tmp_path / "safe.parquet"), examples.filter(pa.array(~unsafe)))
    output = str(tmp_path / "models" / "head.pt")
    ckpt = clip_cfg.checkpoint
    args = ["train-nsfw-head", "--positives", str(tmp_path / "unsafe.parquet"), "--negatives", str(tmp_path / "safe.parquet")]
    args += ["-o", output, "--set", f"clip.checkpoint.uri={ckpt.uri}", "--set", f"clip.checkpoint.sha256={ckpt.sha256}"]
    result = CliRunner().invoke(app, [*args, "--set", "clip.device=cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(storage.read_bytes(artifact_uris(output)[1]))
    assert report["test"]["positives"] + report["test"]["negatives"] + report["train_rows"] == 160
    assert f"embeddings of: sha256:{ckpt.sha256}" in result.output and "ROC AUC" in result.output
