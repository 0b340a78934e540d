"""The DFN-style filter network: trained on seed pairs, it ranks matched captions above shuffled ones."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from curation import storage
from curation.cli import app
from curation.config import ClipConfig
from curation.models import ModelRef, resolve, sha256_file
from curation.scoring.clip import ClipScorer, register_model_config, torch_threads
from curation.scoring.evaluation import roc_auc_split
from curation.scoring.filter_network import (
    TINY_CLIP_CONFIG,
    TrainSettings,
    artifact_uris,
    derangement,
    train_demo_filter_network,
    train_filter_network,
)
from curation.scoring.scenes import make_seed_pairs


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and do not crawl when other jobs share the cores."""
    with torch_threads(1):
        yield


@functools.cache
def demo_network() -> ModelRef:
    """The demo filter network, trained once per test process (also used by test_image_safety)."""
    out = tempfile.mkdtemp(prefix="curation-test-filter-network-")
    atexit.register(shutil.rmtree, out, True)
    return train_demo_filter_network(out, seed=0)


def matched_vs_shuffled(scorer: ClipScorer, pairs: pa.Table) -> float:
    """AUC of each image's score with its own caption against its score with another pair's caption."""
    shuffled = pairs.set_column(1, "caption", pairs["caption"].take(pa.array(derangement(pairs.num_rows, seed=1))))
    matched, other = scorer.score(pairs)["clip_score"].to_numpy(), scorer.score(shuffled)["clip_score"].to_numpy()
    return roc_auc_split(matched, other)


def test_trained_filter_network_scores_matched_captions_above_shuffled_on_heldout_pairs():
    ref = demo_network()
    heldout = make_seed_pairs(300, seed=2024)  # images drawn fresh, never seen in training
    trained = ClipScorer(ClipConfig(checkpoint=ref, device="cpu", batch_size=64, decode_workers=1))
    auc = matched_vs_shuffled(trained, heldout)
    print(f"held-out AUC matched vs shuffled captions: trained {auc:.4f}")
    assert auc >= 0.9
    # The same architecture untrained cannot tell them apart: the AUC comes from the training.
    untrained = ClipScorer(
        ClipConfig(model=register_model_config(TINY_CLIP_CONFIG), pretrained=None, device="cpu", batch_size=64),
        allow_random_weights=True,
    )
    assert 0.3 <= matched_vs_shuffled(untrained, heldout) <= 0.7


def test_training_writes_checkpoint_checksum_config_and_report():
    ref = demo_network()
    sha_uri, config_uri, report_uri = artifact_uris(ref.uri)
    assert sha256_file(ref.uri) == ref.sha256 and resolve(ref) is not None
    assert storage.read_bytes(sha_uri).decode() == f"{ref.sha256}  filter_network.pt\n"
    assert storage.read_json(config_uri)["model_cfg"] == TINY_CLIP_CONFIG
    report = storage.read_json(report_uri)
    assert report["model"] == ref.model_dump()
    assert report["train_pairs"] + report["heldout_pairs"] == report["pairs"] == 1200
    assert report["heldout_auc_matched_vs_shuffled"] >= 0.9
    assert report["final_loss"] < report["first_loss"]


def test_demo_network_is_reused_when_already_trained():
    ref = demo_network()
    before = os.stat(ref.uri).st_mtime_ns
    again = train_demo_filter_network(ref.uri.rsplit("/", 1)[0], seed=0)
    assert again == ref and os.stat(ref.uri).st_mtime_ns == before


def test_fine_tuning_starts_from_the_configured_model(tmp_path):
    base = ClipConfig(checkpoint=demo_network(), device="cpu")
    output = str(tmp_path / "tuned.pt")
    settings = TrainSettings(epochs=1, batch_size=64, lr=1e-4, warmup_steps=1, seed=3)
    ref, report = train_filter_network(make_seed_pairs(200, seed=7), output, base=base, settings=settings)
    assert report["source"] == f"fine-tuned from sha256:{base.checkpoint.sha256}"
    assert report["heldout_auc_matched_vs_shuffled"] >= 0.9  # one epoch cannot have learnt that: it started trained
    scorer = ClipScorer(ClipConfig(checkpoint=ref, device="cpu"))
    assert scorer.clip.model_id == f"sha256:{ref.sha256}"


def test_roc_auc_counts_ties_as_half_and_derangement_moves_every_row():
    assert roc_auc_split(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)
    assert roc_auc_split(np.array([1.0]), np.array([2.0])) == 0.0
    for n in range(2, 40):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))


def test_cli_trains_from_a_pairs_file_and_counts_unusable_pairs(tmp_path):
    pairs = make_seed_pairs(150, seed=11)
    images = pairs["image"].to_pylist()
    images[0], images[1] = b"corrupt", None
    storage.write_table(str(tmp_path / "hq" / "pairs.parquet"), pairs.set_column(2, "image", pa.array(images, pa.binary())))
    output = str(tmp_path / "models" / "dfn.pt")
    result = CliRunner().invoke(
        app, ["train-filter-network", "--pairs", f"{tmp_path}/hq/", "-o", output, "--epochs", "1", "--batch-size", "64"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(storage.read_bytes(artifact_uris(output)[2]))
    assert report["unusable_pairs"] == 2 and report["pairs"] == 150
    assert f"sha256: {report['model']['sha256']}" in result.output
    assert f"--set clip.checkpoint.uri={output}" in result.output
    missing = CliRunner().invoke(app, ["train-filter-network", "-o", output])
    assert missing.exit_code == 2 and "--pairs" in missing.output
