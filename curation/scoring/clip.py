"""CLIP scoring of image-text pairs with open_clip: cosine similarity and image embeddings.

`ClipScorer(cfg.clip).score(table)` takes an Arrow table with `pair_id`, `caption` and `image`
(encoded JPEG/PNG/WebP/GIF bytes) and returns, per row, `clip_score` (cosine of the normalized
image and caption embeddings, the quantity LAION's 0.28 threshold and DataComp/DFN percentiles
are defined on), `clip_embedding` (L2-normalized, for dedup), `nsfw_score` (when a safety head is
configured) and `image_error` (why a row has no score). Bad images never raise: an undecodable
file is `image_undecodable`, and one whose header announces more than `max_image_pixels` pixels
(a decompression bomb) is `image_too_large`, refused before any pixel is decoded.

Throughput: a thread pool decodes and tokenizes the next batches while the model runs the current
one (Pillow and torch release the GIL; threads also work inside daemonic worker processes, where
child processes cannot be started); `decode_backend: processes` uses a torch DataLoader's worker
processes instead, for a fast GPU whose feeding thread must not wait for the GIL. JPEGs are
decoded at a reduced DCT scale when far larger than the model input. Pixels travel as uint8 and
are normalized on the device. On CUDA the model runs under fp16/bf16 autocast; on CPU in fp32.

Models load once per process (cached by their spec): an open_clip name + pretrained tag, an
`hf-hub:` id, or a checkpoint file (local / s3://, sha256 checked, torch.load(weights_only=True)),
either the self-describing file `train-filter-network` writes (architecture included) or a
plain open_clip state dict whose architecture is `cfg.model`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from curation import layout, storage
from curation.config import BuildConfig, ClipConfig
from curation.errors import ConfigError
from curation.models import ModelRef, resolve, sha256_file
from curation.schema import DROPPED, PAIR_SCORES
from curation.stats import Progress, StageStats

log = logging.getLogger("curation.clip")

STAGE = "clip"
CHECKPOINT_FORMAT = "curation-clip/1"
# Web image formats only: the long tail of Pillow plugins (TIFF, PSD, ...) is attack surface.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "MPO")
# The scorer's output: the pair id, the PAIR_SCORES signals, and why a row has none.
SCORES = pa.schema(
    [
        pa.field("pair_id", pa.string()),
        *PAIR_SCORES,
        pa.field("image_error", pa.string(), metadata={"doc": "drop reason when the row has no score, else null"}),
        pa.field("image_error_detail", pa.string(), metadata={"doc": "what was wrong (decoder message, pixel count)"}),
    ]
)
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


# --- image decoding ---------------------------------------------------------------------------


class ImageRejected(Exception):
    """An image that cannot be scored; `reason` is the drop reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Preprocess:
    """open_clip's inference preprocessing (PreprocessCfg), applied with Pillow."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> Preprocess:
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if cfg.get("resize_mode", "shortest") not in {"shortest", "squash", "longest"}:
            raise ConfigError(f"unsupported open_clip resize_mode {cfg.get('resize_mode')!r}")
        return cls(
            size=(int(size[0]), int(size[1])),
            mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=int(cfg.get("fill_color", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }


def decode_image(data: bytes | None, pre: Preprocess, max_pixels: int, jpeg_draft: bool = True) -> np.ndarray:
    """Encoded bytes -> the model's input as uint8 (height, width, 3); raises ImageRejected.

    Matches open_clip's eval transform for RGB images (torchvision Resize + CenterCrop, or squash,
    or keep-ratio + pad). Images are converted to RGB before resizing (open_clip converts after,
    which makes Pillow resize palette images with nearest-neighbour).
    """
    if not data:
        raise ImageRejected("image_missing", "no image bytes")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageRejected("image_too_large", f"{width}x{height} pixels > max_image_pixels {max_pixels}")
            if jpeg_draft and img.format in {"JPEG", "MPO"}:
                # DCT-domain downscale to no less than the target size: same result, far less work.
                img.draft("RGB", (pre.size[1], pre.size[0]))
            rgb = img.convert("RGB")
        return np.asarray(_resize_crop(rgb, pre))
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("image_too_large", str(exc)[:200]) from exc
    except Exception as exc:  # any decoder failure on hostile bytes is the image's fault, not the batch's
        raise ImageRejected("image_undecodable", f"{type(exc).__name__}: {exc}"[:200]) from exc


def _resize_crop(img: Image.Image, pre: Preprocess) -> Image.Image:
    target_h, target_w = pre.size
    resample = _RESAMPLE.get(pre.interpolation, Image.Resampling.BICUBIC)
    width, height = img.size
    if pre.resize_mode == "squash":
        return img.resize((target_w, target_h), resample)
    if pre.resize_mode == "shortest" and target_h == target_w:
        # torchvision Resize(int): shortest side to the target, the other truncated.
        short, long = min(width, height), max(width, height)
        new_short, new_long = target_w, int(target_w * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:  # open_clip ResizeKeepRatio: longest=1 for 'longest', 0 for non-square 'shortest'
        ratios = (height / target_h, width / target_w)
        ratio = max(ratios) if pre.resize_mode == "longest" else min(ratios)
        new_h, new_w = round(height / ratio), round(width / ratio)
    if (new_w, new_h) != (width, height):
        img = img.resize((max(new_w, 1), max(new_h, 1)), resample)
        width, height = img.size
    if width >= target_w and height >= target_h:  # torchvision CenterCrop offsets
        left, top = round((width - target_w) / 2.0), round((height - target_h) / 2.0)
        return img.crop((left, top, left + target_w, top + target_h))
    canvas = Image.new("RGB", (target_w, target_h), (pre.fill_color,) * 3)
    left = (target_w - width) // 2 if target_w > width else -round((width - target_w) / 2.0)
    top = (target_h - height) // 2 if target_h > height else -round((height - target_h) / 2.0)
    canvas.paste(img, (left, top))
    return canvas


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with `count` torch intra-op threads (None: leave as is), restoring the setting after."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tokenize(tokenizer: Callable[[list[str]], torch.Tensor], texts: list[str]) -> torch.Tensor:
    """`tokenizer(texts)`, with the same ids; open_clip's BPE tokenizer without its per-row tensor ops."""
    from open_clip.tokenizer import SimpleTokenizer

    if type(tokenizer) is not SimpleTokenizer or tokenizer.reduction_fn is not None:
        return tokenizer(texts)
    context, sot, eot = tokenizer.context_length, tokenizer.sot_token_id, tokenizer.eot_token_id
    out = np.zeros((len(texts), context), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = [sot, *tokenizer.encode(text), eot]
        if len(tokens) > context:  # truncated, still ending in the end-of-text token
            tokens = tokens[:context]
            tokens[-1] = eot
        out[row, : len(tokens)] = tokens
    return torch.from_numpy(out)


# --- model loading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedClip:
    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Preprocess
    device: torch.device
    precision: str  # the autocast dtype in effect: fp32 on CPU
    model_id: str  # identity of the embedding space (for heads trained on it)
    embed_dim: int


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("clip.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_clip(cfg: ClipConfig, *, allow_random_weights: bool = False) -> LoadedClip:
    """The model `cfg` names, loaded once per process and kept (cache key: the model spec)."""
    device = resolve_device(cfg.device)
    precision = cfg.precision if device.type == "cuda" else "fp32"
    checkpoint = (cfg.checkpoint.uri, cfg.checkpoint.sha256) if cfg.checkpoint else None
    return _load_cached(cfg.model, cfg.pretrained, checkpoint, str(device), precision, allow_random_weights)


@functools.lru_cache(maxsize=4)
def _load_cached(
    name: str, pretrained: str | None, checkpoint: tuple[str, str | None] | None, device: str, precision: str, random_ok: bool
) -> LoadedClip:
    import open_clip

    started = time.monotonic()
    preprocess_cfg: dict[str, Any] | None = None
    if checkpoint is not None:
        ref = ModelRef(uri=checkpoint[0], sha256=checkpoint[1])
        model, arch, preprocess_cfg, model_id = _load_checkpoint(name, pretrained, ref)
        spec = f"checkpoint {checkpoint[0]}"
    else:
        arch, spec = name, f"{name}" + (f" (pretrained={pretrained})" if pretrained and not name.startswith("hf-hub:") else "")
        if pretrained is None and not name.startswith("hf-hub:") and not random_ok:
            raise ConfigError(
                f"clip.model {name} has no weights: set clip.pretrained to an open_clip tag, "
                "clip.model to an hf-hub: id, or clip.checkpoint to a trained checkpoint"
            )
        try:
            model = open_clip.create_model(name, pretrained=None if name.startswith("hf-hub:") else pretrained)
        except Exception as exc:  # download refused (HF_HUB_OFFLINE), unknown tag, bad files
            raise ConfigError(
                f"cannot load CLIP model {spec}: {exc}. Without network access, copy the weights to a local or "
                "s3:// file and set clip.checkpoint (uri + sha256) with clip.model naming its architecture"
            ) from exc
        model_id = name if name.startswith("hf-hub:") else f"{name}:{pretrained}"
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise ConfigError(f"cannot build the tokenizer of CLIP model {spec}: {exc}") from exc
    preprocess = Preprocess.from_open_clip(preprocess_cfg or dict(model.visual.preprocess_cfg))
    model = model.to(torch.device(device)).eval()
    with torch.inference_mode():  # the joint embedding width, whatever the towers are
        embed_dim = int(model.encode_text(tokenizer([""]).to(torch.device(device))).shape[-1])
    log.info("loaded CLIP %s on %s (%s) in %.1fs", spec, device, precision, time.monotonic() - started)
    return LoadedClip(model, tokenizer, preprocess, torch.device(device), precision, model_id, embed_dim)


def _load_checkpoint(name: str, pretrained: str | None, ref: ModelRef) -> tuple[torch.nn.Module, str, dict[str, Any] | None, str]:
    """(model, architecture name, preprocess cfg, model id) from a checkpoint file.

    A plain open_clip state dict (e.g. DFN's or DataComp's weights copied to S3) is built as
    `name`; when `pretrained` names the tag the weights came from, its preprocessing and
    QuickGELU setting are used too, read from open_clip's table, with nothing downloaded:

        clip: {model: ViT-L-14-quickgelu, pretrained: dfn2b,
               checkpoint: {uri: s3://models/dfn2b/open_clip_pytorch_model.bin, sha256: ...}}
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    path = resolve(ref)  # sha256 checked here when configured
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"CLIP checkpoint {ref.uri} cannot be read with torch.load(weights_only=True): {exc}. "
            "Only plain tensors and containers are accepted; a pickled model object is refused"
        ) from exc
    model_id = f"sha256:{ref.sha256 or sha256_file(path)}"
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        arch = register_model_config(payload["model_cfg"])
        with quiet_random_init():
            model = open_clip.create_model(arch, pretrained=None, pretrained_text=False)
        try:
            model.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"CLIP checkpoint {ref.uri} does not match its own model config: {exc}") from exc
        return model, arch, payload.get("preprocess_cfg"), model_id
    del payload  # open_clip's loader reads the file again and converts third-party layouts
    tag = (get_pretrained_cfg(name, pretrained) if pretrained and not name.startswith("hf-hub:") else None) or {}
    try:
        with quiet_random_init():
            model = open_clip.create_model(
                name, pretrained=None, load_weights=False, pretrained_text=False, force_quick_gelu=tag.get("quick_gelu", False)
            )
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot load CLIP checkpoint {ref.uri} into architecture clip.model={name}: {exc}") from exc
    from_tag = {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag}
    preprocess = {**model.visual.preprocess_cfg, **from_tag}
    return model, name, preprocess, model_id


def save_checkpoint(
    model: torch.nn.Module, model_cfg: dict[str, Any], preprocess: Preprocess, output: str, meta: dict[str, Any] | None = None
) -> ModelRef:
    """Write a self-describing checkpoint (architecture, preprocessing, weights) atomically; its ModelRef."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_cfg": model_cfg,
        "preprocess_cfg": preprocess.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    storage.write_bytes(output, data)
    return ModelRef(uri=output, sha256=hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def quiet_random_init() -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning where the weights are loaded or trained next."""

    class Quiet(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    quiet, root = Quiet(), logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


_REGISTRY_LOCK = threading.Lock()


def register_model_config(model_cfg: dict[str, Any]) -> str:
    """Register an open_clip model config dict (embed_dim, vision_cfg, text_cfg); returns its name."""
    import open_clip

    canonical = json.dumps(model_cfg, sort_keys=True)
    name = f"curation-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"
    with _REGISTRY_LOCK:
        if name not in open_clip.list_models():
            path = _config_dir() / f"{name}.json"
            path.write_text(canonical)
            open_clip.add_model_config(path)
    return name


@functools.cache
def _config_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="curation-open-clip-configs-"))


# --- scoring ----------------------------------------------------------------------------------


@dataclass
class _Prepared:
    start: int
    rows: np.ndarray  # indices (within the table) of rows with a usable image and caption
    pixels: torch.Tensor  # uint8 (len(rows), H, W, 3)
    tokens: torch.Tensor  # (len(rows), context_length)
    errors: list[tuple[int, str, str]]  # (row index, reason, detail)

    def pin_memory(self) -> _Prepared:  # called by DataLoader(pin_memory=True) in the parent process
        return _Prepared(self.start, self.rows, self.pixels.pin_memory(), self.tokens.pin_memory(), self.errors)


class _BatchSource(torch.utils.data.Dataset):
    """Batch `i` of a table, prepared in a DataLoader worker (inherited by fork: nothing is pickled)."""

    def __init__(self, prepare: Callable[..., _Prepared], images: pa.Array, captions: pa.Array, size: int):
        self.prepare, self.images, self.captions, self.size = prepare, images, captions, size

    def __len__(self) -> int:
        return -(-len(self.images) // self.size)

    def __getitem__(self, index: int) -> _Prepared:
        start = index * self.size
        length = min(self.size, len(self.images) - start)
        images, captions = self.images.slice(start, length).to_pylist(), self.captions.slice(start, length).to_pylist()
        return self.prepare(start, images, captions, pin=False)


class ClipScorer:
    """Scores image-text pairs with one CLIP model (and optionally an NSFW head on its embeddings)."""

    def __init__(self, cfg: ClipConfig, *, allow_random_weights: bool = False):
        self.cfg = cfg
        self.clip = load_clip(cfg, allow_random_weights=allow_random_weights)
        self.nsfw_head = None
        if cfg.nsfw_head is not None:
            from curation.scoring.image_safety import load_nsfw_head

            self.nsfw_head = load_nsfw_head(cfg.nsfw_head, device=self.clip.device)
            self.nsfw_head.check_compatible(self.clip.model_id, self.clip.embed_dim)
        device = self.clip.device
        self._mean = torch.tensor(self.clip.preprocess.mean, device=device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(self.clip.preprocess.std, device=device).view(1, 3, 1, 1) * 255

    # Columns in, prepared batches out (runs in the decode threads or processes).
    def _prepare(self, start: int, images: list[bytes | None], captions: list[str | None], pin: bool = True) -> _Prepared:
        pre, cfg = self.clip.preprocess, self.cfg
        rows, arrays, texts, errors = [], [], [], []
        for offset, (data, caption) in enumerate(zip(images, captions, strict=True)):
            if caption is None:
                errors.append((start + offset, "caption_missing", "no caption"))
                continue
            try:
                arrays.append(decode_image(data, pre, cfg.max_image_pixels, cfg.jpeg_draft))
            except ImageRejected as exc:
                errors.append((start + offset, exc.reason, exc.detail))
                continue
            rows.append(start + offset)
            texts.append(caption)
        height, width = pre.size
        pixels = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, height, width, 3), dtype=torch.uint8)
        tokens = tokenize(self.clip.tokenizer, texts) if texts else torch.empty((0, 1), dtype=torch.long)
        if pin and self.clip.device.type == "cuda":
            pixels, tokens = pixels.pin_memory(), tokens.pin_memory()
        return _Prepared(start, np.asarray(rows, dtype=np.int64), pixels, tokens, errors)

    def _batches(self, images: pa.Array, captions: pa.Array) -> Iterator[_Prepared]:
        """Prepared batches in order, `decode_workers` of them in flight ahead of the model."""
        size, n = self.cfg.batch_size, len(images)

        def job(start: int) -> _Prepared:
            length = min(size, n - start)
            return self._prepare(start, images.slice(start, length).to_pylist(), captions.slice(start, length).to_pylist())

        starts = range(0, n, size)
        workers = self.cfg.decode_workers
        if workers == 0:
            yield from map(job, starts)
            return
        if self.cfg.decode_backend == "processes":
            if not multiprocessing.current_process().daemon:
                loader = torch.utils.data.DataLoader(
                    _BatchSource(self._prepare, images, captions, size),
                    batch_size=None,
                    num_workers=workers,
                    prefetch_factor=2,
                    pin_memory=self.clip.device.type == "cuda",
                    multiprocessing_context="fork",  # the workers inherit the table and the tokenizer
                )
                yield from loader
                return
            log.warning("decode_backend=processes in a daemonic process (e.g. a Celery prefork worker): decoding in threads")
        with ThreadPoolExecutor(workers, thread_name_prefix="clip-decode") as pool:
            pending: deque = deque()
            for start in starts:
                pending.append(pool.submit(job, start))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    @torch.inference_mode()
    def _forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        device = self.clip.device
        x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        tokens = tokens.to(device, non_blocking=True)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.clip.precision)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            image = self.clip.model.encode_image(x, normalize=True).float()
            text = self.clip.model.encode_text(tokens, normalize=True).float()
        # Renormalize in fp32: autocast leaves the norm a few 1e-3 off in bf16.
        image = torch.nn.functional.normalize(image, dim=-1)
        text = torch.nn.functional.normalize(text, dim=-1)
        nsfw = self.nsfw_head.score(image) if self.nsfw_head is not None else None
        return (image * text).sum(-1), image, nsfw

    def score(self, table: pa.Table, on_batch: Callable[[int], None] | None = None) -> pa.Table:
        """Scores for every row of `table` (pair_id, caption, image), in row order (schema SCORES).

        `on_batch(rows)` is called after each batch (progress reporting).
        """
        missing = [c for c in ("pair_id", "caption", "image") if c not in table.column_names]
        if missing:
            raise ConfigError(f"CLIP scoring needs columns pair_id, caption, image; the table lacks {missing}")
        n, dim = table.num_rows, self.clip.embed_dim
        scores, nsfw = np.zeros(n, np.float32), np.zeros(n, np.float32)
        embeddings = np.zeros((n, dim), np.float32)
        errors: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        ok = np.zeros(n, bool)
        images, captions = table["image"].combine_chunks(), table["caption"].combine_chunks()
        with torch_threads(self.cfg.cpu_threads if self.clip.device.type == "cpu" else None):
            for batch in self._batches(images, captions):
                for row, reason, detail in batch.errors:
                    errors[row], details[row] = reason, detail
                if len(batch.rows):
                    score, image, head = self._forward(batch.pixels, batch.tokens)
                    scores[batch.rows] = score.cpu().numpy()
                    embeddings[batch.rows] = image.cpu().numpy()
                    if head is not None:
                        nsfw[batch.rows] = head.cpu().numpy()
                    ok[batch.rows] = True
                if on_batch:
                    on_batch(len(batch.rows) + len(batch.errors))
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
        embedding_col = pa.ListArray.from_arrays(offsets, pa.array(embeddings.reshape(-1)), mask=pa.array(~ok))
        return pa.table(
            [
                table["pair_id"].cast(pa.string()),
                pa.array(scores, mask=~ok),
                embedding_col,
                pa.array(nsfw, mask=~ok | (self.nsfw_head is None)),
                pa.array(errors, pa.string()),
                pa.array(details, pa.string()),
            ],
            schema=SCORES,
        )


def error_counts(scores: pa.Table) -> dict[str, int]:
    """Rows without a score, by reason."""
    counts = pc.value_counts(scores["image_error"].drop_null()).to_pylist() if scores.num_rows else []
    return {item["values"]: item["counts"] for item in counts}


# --- the stage --------------------------------------------------------------------------------


def score_pairs_shard(inputs: list[str], output: str, cfg: BuildConfig) -> StageStats:
    """Per-shard stage: pairs Parquet file(s) -> the same rows with the PAIR_SCORES columns appended.

    Input: PAIRS shards after fetch_images; only rows whose `status` is "ok" are read (fetch_images
    counted and listed the others). Rows that cannot be scored are dropped with their reason
    (`image_missing`, `image_undecodable`, `image_too_large`, `caption_missing`) and written to
    `{stage}/dropped/`. Existing score columns are replaced, so a rerun with another model
    rescores. Stateless per shard: map it over shards.
    """
    stats = StageStats(stage=STAGE, shard=storage.name(output).removesuffix(".parquet"))
    started = time.monotonic()
    progress = Progress(stats)
    scorer = ClipScorer(cfg.clip)
    dropped: list[pa.Table] = []
    first = read_pairs(inputs[0]) if inputs else pa.table({"pair_id": pa.array([], pa.string())})
    unscored = [f for f in first.schema if f.name not in PAIR_SCORES.names]
    schema = pa.schema(unscored + list(PAIR_SCORES))
    with storage.TableWriter(output, schema) as writer:
        for index, uri in enumerate(inputs):
            table = first if index == 0 else read_pairs(uri)
            if "status" in table.column_names:  # fetch_images output: it counted its failures already
                table = table.filter(pc.equal(table["status"], "ok"))
            stats.bytes_in += storage.size(uri)
            scores = scorer.score(table, on_batch=lambda rows: _count(stats, progress, rows))
            bad = scores["image_error"].is_valid()
            for reason, count in error_counts(scores).items():
                stats.drop(reason, count)
            if pc.any(bad).as_py():
                dropped.append(_dropped_rows(table.filter(bad), scores.filter(bad), uri))
            kept = table.drop_columns([c for c in PAIR_SCORES.names if c in table.column_names])
            for field in PAIR_SCORES:
                kept = kept.append_column(field, scores[field.name])
            writer.write(kept.filter(pc.invert(bad)).select(schema.names))
            progress.tick()
    layout.finish_shard(stats, writer, output, started, dropped)
    progress.log()
    return stats


def _count(stats: StageStats, progress: Progress, rows: int) -> None:
    stats.rows_in += rows
    progress.tick()


def read_pairs(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file of pairs; a missing or unreadable file is a BadInputError naming it."""
    from curation.errors import BadInputError

    try:
        return storage.read_table(uri, columns=columns)
    except FileNotFoundError as exc:
        raise BadInputError(f"pairs file {uri} does not exist; check the input path") from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise BadInputError(f"cannot read pairs file {uri}: {exc}. Check that it is a complete Parquet file.") from exc


def _dropped_rows(rows: pa.Table, scores: pa.Table, uri: str) -> pa.Table:
    n = rows.num_rows

    def column(*names: str, type_: pa.DataType = pa.string(), default: Any = None) -> pa.Array:
        for name in names:
            if name in rows.column_names:
                return rows[name].cast(type_)
        return pa.array([default] * n, type_)

    detail = pc.binary_join_element_wise("pair_id=", rows["pair_id"].cast(pa.string()), ": ", scores["image_error_detail"], "")
    return pa.table(
        {
            "stage": pa.array([STAGE] * n, pa.string()),
            "reason": scores["image_error"],
            "doc_id": column("doc_id"),
            "url": column("image_url", "url"),
            "source_uri": column("source_uri", default=uri),
            "source_offset": column("source_offset", type_=pa.int64()),
            "detail": detail,
        },
        schema=DROPPED,
    )
