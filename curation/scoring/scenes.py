"""Synthetic image-text scenes: coloured shapes at positions on backgrounds, with true captions.

The offline demo's seed data and the sample crawl's images come from here, so the demo's CLIP
filter network is trained on the distribution the demo build then scores: a caption that
describes its picture ("two red circles on the left on a blue background") against one that
does not. Pillow only (no torch): the sample crawl imports it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pyarrow as pa
import xxhash
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 180),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = {"on the left": (0.25, 0.5), "on the right": (0.75, 0.5), "at the top": (0.5, 0.25), "at the bottom": (0.5, 0.75)}
COUNTS = {1: "a", 2: "two", 3: "three"}
TEMPLATES = ("{obj} {pos} on a {bg} background", "a photo of {obj} {pos} on a {bg} background", "{obj} {pos}, {bg} background")
STRIPES = "black and yellow striped"


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str  # a colour name, or STRIPES
    position: str
    count: int

    def caption(self, template: str) -> str:
        thing = self.shape + ("es" if self.shape == "cross" and self.count > 1 else "s" if self.count > 1 else "")
        return template.format(obj=f"{COUNTS[self.count]} {self.colour} {thing}", pos=self.position, bg=self.background)


def random_scene(rng: random.Random, striped_share: float = 0.0) -> Scene:
    colour = rng.choice(list(COLOURS))
    background = STRIPES if rng.random() < striped_share else rng.choice([c for c in COLOURS if c != colour])
    return Scene(rng.choice(SHAPES), colour, background, rng.choice(list(POSITIONS)), rng.choice(list(COUNTS)))


def render_scene(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """The scene drawn with a little jitter in place and size, so no two images are the same."""
    if scene.background == STRIPES:
        img = _stripes(size, rng)
    else:
        img = Image.new("RGB", (size, size), COLOURS[scene.background])
    draw = ImageDraw.Draw(img)
    cx, cy = POSITIONS[scene.position]
    radius = size * (0.16 if scene.count == 1 else 0.09) * rng.uniform(0.85, 1.15)
    # Several shapes sit side by side (or stacked for left/right) around the position's centre.
    step = radius * 2.3
    vertical = scene.position in {"on the left", "on the right"}
    for k in range(scene.count):
        offset = (k - (scene.count - 1) / 2) * step
        x = cx * size + (0 if vertical else offset) + rng.uniform(-2, 2)
        y = cy * size + (offset if vertical else 0) + rng.uniform(-2, 2)
        _shape(draw, scene.shape, x, y, radius, COLOURS[scene.colour])
    return img


def _stripes(size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), COLOURS["yellow"])
    draw = ImageDraw.Draw(img)
    width, phase = size // 8, rng.randrange(size // 4)
    for start in range(-size + phase, 2 * size, 2 * width):
        draw.polygon([(start, 0), (start + width, 0), (start + width - size, size), (start - size, size)], fill=COLOURS["black"])
    return img


def _shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        draw.rectangle((x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill)
    else:  # cross
        w = r * 0.35
        draw.rectangle((x - r, y - w, x + r, y + w), fill=fill)
        draw.rectangle((x - w, y - r, x + w, y + r), fill=fill)


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_seed_pairs(n: int, seed: int = 0, size: int = 64, striped_share: float = 0.1) -> pa.Table:
    """`n` image-text pairs (pair_id, caption, image as JPEG bytes), the same for the same seed."""
    rng = random.Random(seed)
    ids, captions, images = [], [], []
    for i in range(n):
        scene = random_scene(rng, striped_share)
        captions.append(scene.caption(rng.choice(TEMPLATES)))
        images.append(encode_jpeg(render_scene(scene, rng, size)))
        ids.append(xxhash.xxh128_hexdigest(f"seed-pairs/{seed}/{i}".encode()))
    return pa.table({"pair_id": ids, "caption": captions, "image": pa.array(images, pa.binary())})
