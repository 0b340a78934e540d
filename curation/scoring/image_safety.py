"""Image safety: an NSFW score from CLIP image embeddings, by a small head on top of them.

The head is a logistic regression (or a small MLP) over the L2-normalized image embedding that
`ClipScorer` computes anyway, so the score costs one matrix product per batch. It is trained on
labelled embeddings (`train_nsfw_head`, `curation train-nsfw-head`), written as one file that
`torch.load(weights_only=True)` reads, addressed by a `ModelRef` (local / s3://, sha256 checked)
in `clip.nsfw_head`, and refused when it was trained on another CLIP model's embeddings.

LAION's CLIP-based NSFW detector loads the same way: its PyTorch release `h14_nsfw.pth`
(github.com/LAION-AI/CLIP-based-NSFW-Detector, for ViT-H-14 laion2b_s32b_b79k embeddings) is a
plain state dict of a 7-layer MLP (`layers.0` ... `layers.16`), recognised by its keys:

    clip: {model: ViT-H-14, pretrained: laion2b_s32b_b79k,
           nsfw_head: {uri: s3://models/laion/h14_nsfw.pth, sha256: <its sha256>}}

Its raw output is used as the score, clipped to [0, 1], as NeMo Curator does. (LAION's older
ViT-L/14 and ViT-B/32 detectors are Keras models and would need converting first.)

What the tests and the demo train on is a stand-in: with no NSFW data on this machine, the
"unsafe" class is a visual pattern the project draws itself (black-and-yellow hazard stripes
behind the shapes of `filter_network.make_seed_pairs`). It shows the mechanics, training,
evaluation, loading, checksum and compatibility checks, not the ability to find NSFW content.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from curation import storage
from curation.errors import ConfigError
from curation.models import ModelRef, resolve

log = logging.getLogger("curation.image_safety")

HEAD_FORMAT = "curation-nsfw-head/1"
# LAION's H14 detector: Linear(d,1024) ReLU Dropout Linear(1024,2048) ... Linear(128,16) Linear(16,1).
_LAION_H14_LINEAR = (0, 3, 6, 9, 12, 15, 16)
_LAION_H14_KEYS = {f"layers.{i}.{p}" for i in _LAION_H14_LINEAR for p in ("weight", "bias")}


def build_mlp(embed_dim: int, hidden: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them, ending in one logit."""
    layers: list[nn.Module] = []
    width = embed_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class LaionH14(nn.Module):
    """The architecture of LAION's `h14_nsfw.pth` (state dict keys `layers.<i>.weight|bias`)."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        widths = [embed_dim, 1024, 2048, 1024, 256, 128]
        blocks: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            blocks += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(0.2)]
        self.layers = nn.Sequential(*blocks, nn.Linear(128, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class NsfwHead:
    """A loaded head: `score(embeddings) -> [0, 1]` per row (1 = unsafe)."""

    net: nn.Module
    embed_dim: int
    embedding_model: str | None  # model_id of the CLIP it was trained on; None if unknown (LAION)
    output: str  # "sigmoid": the net gives a logit; "raw": the net gives the score itself
    uri: str

    @torch.inference_mode()
    def score(self, embeddings: torch.Tensor) -> torch.Tensor:
        out = self.net(embeddings.float()).squeeze(-1)
        return torch.sigmoid(out) if self.output == "sigmoid" else out.clamp(0.0, 1.0)

    def check_compatible(self, model_id: str, embed_dim: int) -> None:
        """Refuse a head trained on another embedding space: its scores would be meaningless."""
        if embed_dim != self.embed_dim:
            raise ConfigError(
                f"nsfw head {self.uri} takes {self.embed_dim}-d embeddings but the CLIP model gives {embed_dim}-d; "
                "use a head trained on this CLIP model"
            )
        if self.embedding_model is not None and self.embedding_model != model_id:
            raise ConfigError(
                f"nsfw head {self.uri} was trained on embeddings of {self.embedding_model}, "
                f"but the CLIP model in use is {model_id}; retrain the head (curation train-nsfw-head) or change clip.model"
            )


def load_nsfw_head(ref: ModelRef, device: torch.device | str = "cpu") -> NsfwHead:
    """Load a head (ours or LAION's H14 layout), once per process; sha256 checked when configured."""
    return _load_cached(ref.uri, ref.sha256, str(device))


@functools.lru_cache(maxsize=4)
def _load_cached(uri: str, sha256: str | None, device: str) -> NsfwHead:
    path = resolve(ModelRef(uri=uri, sha256=sha256))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"nsfw head {uri} cannot be read with torch.load(weights_only=True): {exc}") from exc
    if isinstance(payload, dict) and payload.get("format") == HEAD_FORMAT:
        net = build_mlp(int(payload["embed_dim"]), list(payload["hidden"]))
        state, embed_dim, model, output = payload["state_dict"], int(payload["embed_dim"]), payload["embedding_model"], "sigmoid"
    elif isinstance(payload, dict) and set(payload) == _LAION_H14_KEYS:
        embed_dim = int(payload["layers.0.weight"].shape[1])
        net, state, model, output = LaionH14(embed_dim), payload, None, "raw"
    else:
        raise ConfigError(f"nsfw head {uri} is neither a {HEAD_FORMAT} file nor LAION's H14 detector state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"nsfw head {uri} does not match its architecture: {exc}") from exc
    return NsfwHead(net.to(device).eval(), embed_dim, model, output, uri)


# --- training -------------------------------------------------------------------------------


def train_nsfw_head(
    embeddings: np.ndarray,
    labels: np.ndarray,
    out_uri: str,
    *,
    embedding_model: str,
    hidden: list[int] | None = None,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    holdout_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[ModelRef, dict[str, Any]]:
    """Fit a head on (embedding, label) rows (label 1 = unsafe); write MODEL, MODEL.sha256, MODEL.eval.json.

    Full-batch training (the embeddings fit in memory), a stratified held-out split for the
    report: ROC AUC, and precision / recall at 0.5. `embedding_model` (the scorer's model_id)
    is stored so the head is refused next to another CLIP model.
    """
    from curation.scoring.evaluation import roc_auc_split

    started = time.monotonic()
    labels = np.asarray(labels)
    x = torch.from_numpy(np.array(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    if x.ndim != 2 or len(x) != len(y):
        raise ConfigError(f"need one embedding row per label; got embeddings {tuple(x.shape)} and {len(y)} labels")
    if not set(np.unique(labels).tolist()) <= {0, 1} or y.sum() < 2 or (1 - y).sum() < 2:
        raise ConfigError("labels must be 0 (safe) / 1 (unsafe), with at least two of each")
    x = nn.functional.normalize(x, dim=-1)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):  # stratified: the same share of each class held out
        rows = np.flatnonzero(labels == cls)
        held[rng.choice(rows, size=max(1, int(len(rows) * holdout_fraction)), replace=False)] = True
    hidden = list(hidden or [])
    torch.manual_seed(seed)
    net = build_mlp(x.shape[1], hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    train = torch.from_numpy(~held)
    positive_weight = (1 - y[train]).sum() / y[train].sum()  # balance the classes
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=positive_weight)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(net(x[train]).squeeze(-1), y[train])
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.inference_mode():
        p = torch.sigmoid(net(x[~train]).squeeze(-1)).numpy()
    truth = labels[held].astype(bool)
    predicted = p >= 0.5
    report = {
        "embedding_model": embedding_model,
        "embed_dim": int(x.shape[1]),
        "hidden": hidden,
        "train_rows": int((~held).sum()),
        "test": {
            "positives": int(truth.sum()),
            "negatives": int((~truth).sum()),
            "roc_auc": round(roc_auc_split(p[truth], p[~truth]), 4),
            "threshold": 0.5,
            "precision": round(float((predicted & truth).sum() / max(predicted.sum(), 1)), 4),
            "recall": round(float((predicted & truth).sum() / max(truth.sum(), 1)), 4),
        },
        "final_train_loss": round(float(loss.item()), 4),
        "seconds": round(time.monotonic() - started, 2),
    }
    payload = {
        "format": HEAD_FORMAT,
        "embed_dim": int(x.shape[1]),
        "hidden": hidden,
        "embedding_model": embedding_model,
        "state_dict": {k: v.detach().contiguous() for k, v in net.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    ref = ModelRef(uri=out_uri, sha256=hashlib.sha256(data).hexdigest())
    report["model"] = ref.model_dump()
    sha_uri, report_uri = artifact_uris(out_uri)
    storage.write_bytes(out_uri, data)
    storage.write_bytes(sha_uri, f"{ref.sha256}  {storage.name(out_uri)}\n".encode())
    storage.write_json(report_uri, report)
    log.info("nsfw head: held-out AUC %.3f, %s", report["test"]["roc_auc"], out_uri)
    return ref, report


def artifact_uris(output: str) -> tuple[str, str]:
    """The sidecars of a head: (sha256, evaluation report)."""
    stem = output.removesuffix(".pt")
    return stem + ".sha256", stem + ".eval.json"


def embed_images(images: list[bytes | None], clip_cfg: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(embeddings of the usable images, mask of usable rows, the CLIP model_id) via ClipScorer."""
    from curation.scoring.clip import ClipScorer

    scorer = ClipScorer(clip_cfg.model_copy(update={"nsfw_head": None}))
    table = pa.table(
        {"pair_id": [str(i) for i in range(len(images))], "caption": [""] * len(images), "image": pa.array(images, pa.binary())}
    )
    scores = scorer.score(table)
    ok = scores["image_error"].is_null().to_numpy(zero_copy_only=False)
    dim = scorer.clip.embed_dim
    flat = scores["clip_embedding"].filter(pa.array(ok)).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim), ok, scorer.clip.model_id


def labelled_embeddings(positives: list[str], negatives: list[str], clip_cfg: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(embeddings, labels, model_id) from Parquet files of unsafe / safe examples.

    A file with a `clip_embedding` column is used as is (it must come from `clip_cfg`'s model);
    otherwise its `image` column is embedded with that model. Unusable images are skipped.
    """
    from curation.scoring.clip import load_clip, read_pairs

    model_id = load_clip(clip_cfg).model_id
    rows, labels = [], []
    for label, patterns in ((1, positives), (0, negatives)):
        for uri in storage.expand_inputs(patterns):
            table = read_pairs(uri)
            if "clip_embedding" in table.column_names:
                column = table["clip_embedding"].drop_null().combine_chunks()
                values = column.flatten().to_numpy(zero_copy_only=False)
                embeddings = values.reshape(len(column), -1)
            elif "image" in table.column_names:
                embeddings, _, model_id = embed_images(table["image"].to_pylist(), clip_cfg)
            else:
                raise ConfigError(f"{uri} has neither a clip_embedding nor an image column")
            rows.append(embeddings)
            labels.append(np.full(len(embeddings), label, dtype=np.int64))
    if not rows:
        raise ConfigError("no labelled examples found in --positives / --negatives")
    return np.concatenate(rows), np.concatenate(labels), model_id


# --- the stand-in "unsafe" class ------------------------------------------------------------


def make_safety_examples(n: int, seed: int = 0, unsafe_share: float = 0.3, size: int = 64) -> pa.Table:
    """Labelled images (image, label): label 1 = the stand-in unsafe pattern (hazard stripes).

    Safe images include yellow and black backgrounds and shapes, so colour alone is not the cue.
    """
    from curation.scoring.scenes import STRIPES, encode_jpeg, random_scene, render_scene

    rng = random.Random(seed)
    images, labels = [], []
    for _ in range(n):
        unsafe = rng.random() < unsafe_share
        scene = random_scene(rng)
        if unsafe:
            scene = type(scene)(scene.shape, scene.colour, STRIPES, scene.position, scene.count)
        images.append(encode_jpeg(render_scene(scene, rng, size)))
        labels.append(int(unsafe))
    return pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.int8())})


def train_demo_nsfw_head(out_uri: str, clip_cfg: Any, seed: int = 0, n: int = 600) -> ModelRef:
    """The demo's stand-in safety head, trained on `clip_cfg`'s embeddings of synthetic examples."""
    examples = make_safety_examples(n, seed)
    embeddings, ok, model_id = embed_images(examples["image"].to_pylist(), clip_cfg)
    labels = examples["label"].to_numpy()[ok]
    ref, _ = train_nsfw_head(embeddings, labels, out_uri, embedding_model=model_id, seed=seed)
    return ref


def train_demo_image_models(out_dir: str, seed: int = 0) -> dict[str, ModelRef]:
    """The demo's image models: the tiny CLIP filter network and the stand-in safety head on it.

    Writes {out_dir}/filter_network.pt and {out_dir}/nsfw_head.pt (each with .sha256 and
    .eval.json); returns their ModelRefs as {"filter_network": ..., "nsfw_head": ...}.
    """
    from curation.config import ClipConfig
    from curation.scoring.filter_network import train_demo_filter_network

    network = train_demo_filter_network(out_dir, seed)
    head = train_demo_nsfw_head(storage.join(out_dir, "nsfw_head.pt"), ClipConfig(checkpoint=network), seed)
    return {"filter_network": network, "nsfw_head": head}


def demo_clip_overrides(refs: dict[str, ModelRef]) -> dict:
    """The `clip` config section that scores with the demo models (for load_config overrides)."""
    return {"clip": {"checkpoint": refs["filter_network"].model_dump(), "nsfw_head": refs["nsfw_head"].model_dump()}}
