"""CLIP scoring throughput: `ClipScorer.score` from encoded JPEG bytes vs a raw model forward.

The baseline is the model's limit: the same images already decoded and transformed by open_clip's
own eval transform, the captions already tokenized, the tensors already on the device; the loop
only runs encode_image + encode_text + the cosine, batch by batch, under the same precision. The
candidate starts from JPEG bytes and captions in an Arrow table and does everything: decode
(threads, ahead of the model), resize, tokenize, transfer, normalize, forward, Arrow output.
A ratio near 1 means decoding is hidden behind the model; target >= 0.8.

A third number says what bounds the candidate: the decode ceiling, the scorer's own decode +
tokenize batches with no model at all (same threads). When the ceiling is below the model's
rate, no scheduling can reach the target on that machine; the candidate's share of the ceiling
then shows how well decoding and the model overlap.

Models are built from their open_clip configs with random weights (no download; the timing does
not depend on the weights): `vit-b-32` is ViT-B-32 (224 px), the smallest model used for real
scoring (LAION's 0.28 threshold, DataComp's small scale), and `tiny` is the demo filter
network's architecture (32 px), whose forward costs less than decoding one JPEG: on a CPU it is
decode-bound by construction. Images are 384 x 384 JPEGs with photo-like grain (about 50 KB each).

    .venv/bin/python -m bench.bench_clip                                  # CPU: vit-b-32 and tiny
    .venv/bin/python -m bench.bench_clip --device cuda --precision bf16   # on a GPU machine

Results: bench/results/clip_<model>_<device>_<precision>[_<n>threads].json.
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import random
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from bench.harness import compare, measure
from curation.config import ClipConfig
from curation.scoring.clip import ClipScorer, register_model_config
from curation.scoring.filter_network import TINY_CLIP_CONFIG
from curation.scoring.scenes import TEMPLATES, encode_jpeg, random_scene, render_scene

MODELS = {"tiny": lambda: register_model_config(TINY_CLIP_CONFIG), "vit-b-32": lambda: "ViT-B-32"}
# Images per run when --images is not given: enough for a steady rate, short enough for 2 CPU cores.
DEFAULT_IMAGES = {("tiny", "cpu"): 2048, ("vit-b-32", "cpu"): 128, ("tiny", "cuda"): 8192, ("vit-b-32", "cuda"): 8192}


def make_pairs(n: int, size: int, seed: int = 0, distinct: int = 1024) -> pa.Table:
    """`n` pairs at `size` px with photo-like grain (web-sized JPEGs); at most `distinct` different ones.

    Repeating images costs the scorer the same as new ones (nothing is cached) and saves the
    minutes it would take to draw tens of thousands.
    """
    rng, grain = random.Random(seed), np.random.default_rng(seed)
    captions, images = [], []
    for _ in range(min(n, distinct)):
        scene = random_scene(rng, striped_share=0.1)
        captions.append(scene.caption(rng.choice(TEMPLATES)))
        pixels = np.asarray(render_scene(scene, rng, size), dtype=np.int16) + grain.integers(-12, 13, (size, size, 1))
        images.append(encode_jpeg(Image.fromarray(pixels.clip(0, 255).astype(np.uint8))))
    table = pa.table({"caption": captions, "image": pa.array(images, pa.binary())}).take(pa.array(np.arange(n) % len(images)))
    return table.add_column(0, "pair_id", pa.array([f"p{i}" for i in range(n)]))


def raw_forward(scorer: ClipScorer, pairs: pa.Table, batch_size: int) -> tuple[Callable[[], int], float]:
    """The baseline loop over pre-decoded, pre-transformed, pre-tokenized tensors on the device."""
    clip = scorer.clip
    pre = clip.preprocess
    transform = image_transform_v2(
        PreprocessCfg(size=pre.size, mean=pre.mean, std=pre.std, interpolation=pre.interpolation, resize_mode=pre.resize_mode),
        is_train=False,
    )
    started = time.perf_counter()
    pixels = torch.stack([transform(Image.open(io.BytesIO(b))) for b in pairs["image"].to_pylist()]).to(clip.device)
    tokens = clip.tokenizer(pairs["caption"].to_pylist()).to(clip.device)
    prepare_seconds = time.perf_counter() - started
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(clip.precision)

    @torch.inference_mode()
    def run() -> int:
        for start in range(0, len(pixels), batch_size):
            with torch.autocast(clip.device.type, dtype=dtype, enabled=dtype is not None):
                image = clip.model.encode_image(pixels[start : start + batch_size], normalize=True)
                text = clip.model.encode_text(tokens[start : start + batch_size], normalize=True)
            (image.float() * text.float()).sum(-1).cpu()
        return len(pixels)

    return run, prepare_seconds


def bench_model(name: str, args: argparse.Namespace) -> dict:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    n = args.images or DEFAULT_IMAGES[(name, device)]
    cfg = ClipConfig(
        model=MODELS[name](),
        pretrained=None,
        device=device,
        precision=args.precision,
        batch_size=args.batch_size,
        decode_workers=args.workers,
        decode_backend=args.decode_backend,
        cpu_threads=args.cpu_threads,
    )
    scorer = ClipScorer(cfg, allow_random_weights=True)
    pairs = make_pairs(n, args.image_size)
    baseline, prepare_seconds = raw_forward(scorer, pairs, args.batch_size)

    def candidate() -> int:
        scores = scorer.score(pairs)
        assert scores["image_error"].null_count == n, "every benchmark image must score"
        return n

    def decode_only() -> int:  # the scorer's decode + tokenize pipeline, no model
        for _ in scorer._batches(pairs["image"].combine_chunks(), pairs["caption"].combine_chunks()):
            pass
        return n

    candidate(), baseline()  # warm up both (allocator, kernels) outside the timing
    ceiling = measure("decode_only", decode_only, args.repeat).rate
    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    result = compare(
        f"clip_{name}_{device}_{scorer.clip.precision}" + (f"_{args.cpu_threads}threads" if args.cpu_threads else ""),
        "pairs/s",
        candidate,
        baseline,
        repeat=args.repeat,
        target=0.8,
        extra={
            "model": name,
            "open_clip_model": cfg.model if name != "tiny" else TINY_CLIP_CONFIG,
            "device": device,
            "device_name": device_name,
            "precision": scorer.clip.precision,
            "images": n,
            "image_size": args.image_size,
            "jpeg_bytes_mean": int(np.mean([len(b) for b in pairs["image"].to_pylist()])),
            "batch_size": args.batch_size,
            "decode_workers": args.workers,
            "decode_backend": args.decode_backend,
            "torch_threads": torch.get_num_threads(),
            "baseline_prepare_seconds": round(prepare_seconds, 2),
            "baseline_is": "encode_image + encode_text + cosine on pre-decoded, pre-transformed, pre-tokenized tensors on device",
            "decode_ceiling_rate": round(ceiling, 1),
        },
    )
    candidate_rate, model_rate = result["candidate"]["rate"], result["baseline"]["rate"]
    bound = "decoding" if ceiling < model_rate else "the model"
    print(
        f"  decode ceiling {ceiling:,.0f} pairs/s (decode + tokenize alone, {args.workers} workers): bound by {bound}; "
        f"candidate at {candidate_rate / min(ceiling, model_rate):.2f} of that bound"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit-b-32,tiny", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="bf16", help="autocast dtype on CUDA")
    parser.add_argument("--images", type=int, default=None, help="pairs per run (default depends on model and device)")
    parser.add_argument("--image-size", type=int, default=384, help="side of the JPEGs, px")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="decode threads or processes (clip.decode_workers)")
    parser.add_argument("--decode-backend", choices=["threads", "processes"], default="threads", help="clip.decode_backend")
    parser.add_argument("--cpu-threads", type=int, default=None, help="torch intra-op threads on CPU (clip.cpu_threads)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # open_clip warns that the weights are random: they are, on purpose
    if args.cpu_threads:  # the baseline runs with the same intra-op threads as the scorer
        torch.set_num_threads(args.cpu_threads)
    for name in args.models.split(","):
        bench_model(name.strip(), args)


if __name__ == "__main__":
    main()
