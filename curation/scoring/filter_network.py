"""DFN-style filter network: a CLIP model trained on a small set of high-quality image-text pairs.

Data Filtering Networks (Fang et al. 2023) score a large uncurated pool with a CLIP model that
was trained (or fine-tuned) only on trusted pairs; its cosine score ranks the pool and the top
share is kept. `train_filter_network` does the training with open_clip (contrastive InfoNCE,
open_clip's ClipLoss), from scratch on a given architecture or by fine-tuning the model a
`ClipConfig` names, and writes one self-describing checkpoint: the open_clip model config,
preprocessing and weights in a file `torch.load(weights_only=True)` reads, with its sha256 and
an evaluation report (held-out AUC of matched vs shuffled captions). `ClipScorer` loads it
through `clip.checkpoint` like any other model.

For the offline demo and the tests, `scenes.make_seed_pairs` draws real images with Pillow (coloured
shapes at positions and counts on backgrounds) with the captions that describe them, and
`train_demo_filter_network` trains a tiny CLIP on them in seconds.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import xxhash

from curation import storage
from curation.config import ClipConfig
from curation.errors import ConfigError
from curation.models import ModelRef, resolve
from curation.scoring.clip import (
    ImageRejected,
    Preprocess,
    decode_image,
    load_clip,
    quiet_random_init,
    register_model_config,
    resolve_device,
    save_checkpoint,
    tokenize,
    torch_threads,
)
from curation.scoring.evaluation import roc_auc_split
from curation.scoring.scenes import make_seed_pairs

log = logging.getLogger("curation.filter_network")

DEMO_CHECKPOINT = "filter_network.pt"

# A CLIP small enough to train on 2 CPU cores in seconds: 32 px ViT (4x4 patches of 8 px),
# a 2-layer text transformer over open_clip's BPE vocabulary, 64-d joint space.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


# --- evaluation -----------------------------------------------------------------------------


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point: each row gets another row's caption."""
    if n < 2:
        raise ValueError("shuffling captions needs at least two pairs")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, 1)
    return perm


def matched_vs_shuffled_auc(image_embeddings: np.ndarray, text_embeddings: np.ndarray, seed: int = 0) -> float:
    """AUC of cos(image_i, caption_i) against cos(image_i, caption_j) for a shuffled j != i."""
    matched = (image_embeddings * text_embeddings).sum(1)
    shuffled = (image_embeddings * text_embeddings[derangement(len(text_embeddings), seed)]).sum(1)
    return roc_auc_split(matched, shuffled)


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    holdout_fraction: float = 0.2
    seed: int = 0
    # torch intra-op threads on CPU (None: torch's default). A tiny model trains fastest on one:
    # its ops are too small to split, and idle threads spin where other work shares the cores.
    cpu_threads: int | None = None


def holdout_mask(pair_ids: list[str], fraction: float) -> np.ndarray:
    """Held-out rows by a hash of pair_id: stable whatever the row order or the data size."""
    buckets = np.array([xxhash.xxh64_intdigest(pid.encode()) % 10_000 for pid in pair_ids])
    return buckets < int(fraction * 10_000)


def decode_all(images: list[bytes | None], pre: Preprocess, max_pixels: int, workers: int = 2) -> list[np.ndarray | None]:
    """Each image as the model's uint8 input, or None where it cannot be used."""

    def one(data: bytes | None) -> np.ndarray | None:
        try:
            return decode_image(data, pre, max_pixels)
        except ImageRejected:
            return None

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        return list(pool.map(one, images, chunksize=64))


def _normalize(pixels: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the model's normalized float input (N, 3, H, W), on pixels' device."""
    x = pixels.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def train_filter_network(
    pairs: pa.Table,
    output: str,
    *,
    model_cfg: dict[str, Any] | None = None,
    base: ClipConfig | None = None,
    settings: TrainSettings = TrainSettings(),
    max_image_pixels: int = 89_478_485,
    device: str = "auto",
) -> tuple[ModelRef, dict[str, Any]]:
    """Train a CLIP filter network on `pairs` (pair_id, caption, image); write the checkpoint `output`.

    From scratch on the open_clip architecture `model_cfg` (default: TINY_CLIP_CONFIG), or, with
    `base`, by fine-tuning the model that ClipConfig names (DFN fine-tunes a pretrained CLIP).
    Writes, as `curation train-classifier` does for fastText models:

        MODEL.pt                 the checkpoint: open_clip model config, preprocessing, weights
        MODEL.sha256             "<sha256>  MODEL.pt" (put the hash in clip.checkpoint.sha256)
        MODEL.model_config.json  the open_clip model and preprocess config, for people and tools
        MODEL.eval.json          held-out AUC (matched vs shuffled captions), top-1, losses, sizes

    and returns (ModelRef, report). Pixels are held in memory as uint8, so this suits sets of up
    to some 10^5 pairs at 224 px; for a DFN-scale set (HQITP-350M) train with open_clip's own
    distributed trainer and point `clip.checkpoint` at its output.
    """
    import open_clip

    started = time.monotonic()
    torch.manual_seed(settings.seed)
    if base is not None:
        loaded = load_clip(base.model_copy(update={"device": "cpu"}))
        model = _copy_model(loaded.model)
        tokenizer, pre = loaded.tokenizer, loaded.preprocess
        model_cfg = _model_cfg_of(base, loaded)
        source = f"fine-tuned from {loaded.model_id}"
    else:
        model_cfg = model_cfg or TINY_CLIP_CONFIG
        arch = register_model_config(model_cfg)
        with quiet_random_init():
            model = open_clip.create_model(arch, pretrained=None)
        tokenizer = open_clip.get_tokenizer(arch)
        pre = Preprocess.from_open_clip(dict(model.visual.preprocess_cfg))
        source = "trained from scratch"

    ids = pairs["pair_id"].cast(pa.string()).to_pylist()
    captions = pairs["caption"].to_pylist()
    arrays = decode_all(pairs["image"].to_pylist(), pre, max_image_pixels)
    usable = [i for i, (a, c) in enumerate(zip(arrays, captions, strict=True)) if a is not None and c is not None]
    images = torch.from_numpy(np.stack([arrays[i] for i in usable])) if usable else None
    tokens = tokenize(tokenizer, [captions[i] for i in usable]) if usable else None
    held = holdout_mask([ids[i] for i in usable], settings.holdout_fraction)
    train_idx, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    if images is None or len(train_idx) < 2 or len(test_idx) < 2:
        raise ConfigError(
            f"filter network training needs usable pairs to train on and to hold out; got {len(train_idx)} and {len(test_idx)}"
        )

    run_on = resolve_device(device)
    model = model.to(run_on)
    with torch_threads(settings.cpu_threads if run_on.type == "cpu" else None):
        losses = _fit(model, images[train_idx], tokens[train_idx], pre, settings)
    model.eval()
    with torch.inference_mode():
        img, txt = [], []
        for start in range(0, len(test_idx), settings.batch_size):
            rows = test_idx[start : start + settings.batch_size]
            img.append(model.encode_image(_normalize(images[rows].to(run_on), pre), normalize=True).float().cpu())
            txt.append(model.encode_text(tokens[rows].to(run_on), normalize=True).float().cpu())
        img, txt = torch.cat(img).numpy(), torch.cat(txt).numpy()
    auc = matched_vs_shuffled_auc(img, txt, seed=settings.seed)
    top1 = float((np.argmax(img @ txt.T, axis=1) == np.arange(len(test_idx))).mean())

    meta = {"source": source, "seed": settings.seed, "train_pairs": len(train_idx)}
    ref = save_checkpoint(model, model_cfg, pre, output, meta)
    report = {
        "model": ref.model_dump(),
        "source": source,
        "open_clip_version": open_clip.__version__,
        "pairs": pairs.num_rows,
        "unusable_pairs": pairs.num_rows - len(usable),
        "train_pairs": len(train_idx),
        "heldout_pairs": len(test_idx),
        "heldout_auc_matched_vs_shuffled": round(auc, 4),
        "heldout_top1_image_to_text": round(top1, 4),
        "first_loss": round(losses[0], 4),
        "final_loss": round(losses[-1], 4),
        "settings": settings.__dict__,
        "model_cfg": model_cfg,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.monotonic() - started, 2),
    }
    sha_uri, config_uri, report_uri = artifact_uris(output)
    storage.write_bytes(sha_uri, f"{ref.sha256}  {storage.name(output)}\n".encode())
    storage.write_json(config_uri, {"model_cfg": model_cfg, "preprocess_cfg": pre.to_dict()})
    storage.write_json(report_uri, report)  # last: the run is complete iff its report exists
    log.info("filter network: held-out AUC %.3f, top-1 %.3f, %s", auc, top1, output)
    return ref, report


def artifact_uris(output: str) -> tuple[str, str, str]:
    """The sidecars of a checkpoint: (sha256, model config, evaluation report)."""
    stem = output.removesuffix(".pt")
    return stem + ".sha256", stem + ".model_config.json", stem + ".eval.json"


def _fit(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, pre: Preprocess, s: TrainSettings) -> list[float]:
    """Contrastive training (open_clip's ClipLoss, AdamW, warmup + cosine); mean loss per epoch."""
    import open_clip

    loss_fn = open_clip.ClipLoss()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # As in open_clip's trainer: no weight decay on gains, biases, embeddings and the temperature.
    no_decay = [
        p for n, p in named if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n or "embedding" in n
    ]
    decay = [p for n, p in named if all(p is not q for q in no_decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    n = len(images)
    total = s.epochs * math.ceil(n / s.batch_size)

    def lr_factor(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - s.warmup_steps) / max(total - s.warmup_steps, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(s.seed)
    model.train()
    losses = []
    for _ in range(s.epochs):
        order, epoch_losses = torch.randperm(n, generator=generator), []
        for start in range(0, n, s.batch_size):
            idx = order[start : start + s.batch_size]
            if len(idx) < 2:
                continue
            device = model.logit_scale.device
            image_features = model.encode_image(_normalize(images[idx].to(device), pre), normalize=True)
            text_features = model.encode_text(tokens[idx].to(device), normalize=True)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
    return losses


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A trainable copy: the cached model of the process stays untouched for scoring."""
    import copy

    clone = copy.deepcopy(model).cpu().float()
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


def _model_cfg_of(base: ClipConfig, loaded: Any) -> dict[str, Any]:
    """The open_clip config of the base model, so the fine-tuned checkpoint describes itself."""
    import open_clip

    if base.checkpoint is not None:
        payload = torch.load(resolve(base.checkpoint), map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and "model_cfg" in payload:
            return payload["model_cfg"]
    cfg = open_clip.get_model_config(base.model)
    if cfg is None:
        raise ConfigError(f"no open_clip config found for clip.model={base.model}; cannot describe the fine-tuned checkpoint")
    return cfg


def train_demo_filter_network(out_dir: str, seed: int = 0, pairs: int = 1200) -> ModelRef:
    """The demo's filter network, `{out_dir}/filter_network.pt`: a tiny CLIP on synthetic seed pairs.

    Idempotent: a network already there, trained with the same seed, size and architecture and
    still matching its recorded sha256, is reused instead of trained again.
    """
    settings = TrainSettings(seed=seed, cpu_threads=1)
    output = storage.join(out_dir, DEMO_CHECKPOINT)
    report_uri = artifact_uris(output)[2]
    if storage.exists(report_uri):
        report = storage.read_json(report_uri)
        ref = ModelRef(**report["model"])
        recorded = (report.get("pairs"), report.get("settings"), report.get("model_cfg"))
        if recorded == (pairs, settings.__dict__, TINY_CLIP_CONFIG):
            try:
                resolve(ref)
                return ref
            except ConfigError:
                log.warning("demo filter network %s is damaged; training it again", output)
    ref, _ = train_filter_network(make_seed_pairs(pairs, seed), output, model_cfg=TINY_CLIP_CONFIG, settings=settings)
    return ref
