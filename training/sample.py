"""A built-in, deterministic sample dataset of drawn faces for all seven expressions.

The real datasets cannot be downloaded everywhere, so the demo and the tests use this. It is
written in the real layouts, so the loaders that read it are the same code that reads FER-2013 and
RAF-DB:

- ``rafdb/basic/EmoLabel/list_patition_label.txt`` + ``rafdb/basic/Image/aligned/*_aligned.jpg``
  (100x100 colour, like RAF-DB's aligned faces);
- ``fer2013/fer2013.csv`` (48x48 grayscale pixel strings, Training/PublicTest/PrivateTest);
- ``custom/<emotion>/*.jpg``: the unseen domain, drawn in a visibly different style (photo-like
  gradient backgrounds, hair, shoulders, softer lines, blur, stronger JPEG compression). A third of
  them are *scene photos* like a phone's: the face at a random place and scale in a larger picture,
  half of those stored sideways with an EXIF orientation (6 or 8) as a phone held upright stores
  them, so the loaders' EXIF handling and ``emobench data faces`` meet what real photos bring.

Expressions differ in brows, eyes and mouth; faces vary in skin tone, size, position, rotation,
background and noise. Every image is a pure function of (seed, split, index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from emobench_common.fileio import atomic_write_json, atomic_write_text
from training.labels import EMOTIONS, FER2013_ID_OF, RAFDB_ID_OF

log = logging.getLogger(__name__)

_SKIN_TONES = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 32)]


@dataclass(frozen=True)
class SampleConfig:
    """How many images per class each split gets, and the seed."""

    seed: int = 0
    rafdb_train_per_class: int = 150
    rafdb_test_per_class: int = 40
    fer_train_per_class: int = 100
    fer_val_per_class: int = 20
    fer_test_per_class: int = 20
    custom_per_class: int = 30
    custom_scene_every: int = 3  # every n-th custom image is a scene photo (0: none)


def draw_face(emotion: str, rng: np.random.Generator, *, size: int, style: str = "lab") -> Image.Image:
    """Draw one face with the given expression.

    Args:
        emotion: one of ``EMOTIONS``.
        rng: source of all variation (pass a generator seeded per image for determinism).
        size: output side in pixels.
        style: 'lab' (flat backgrounds, RAF-DB/FER-like) or 'photo' (the unseen custom domain).
    """
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}")
    s = 200  # draw big, downsample: smoother lines at every output size
    u = lambda v: float(v) * s / 100.0  # noqa: E731 - face coordinates are in percent of the canvas

    if style == "photo":
        top = rng.integers(40, 220, 3)
        bottom = rng.integers(0, 160, 3)
        grad = np.linspace(0, 1, s)[:, None, None]
        bg = (top[None, None, :] * (1 - grad) + bottom[None, None, :] * grad).repeat(s, axis=1)
        img = Image.fromarray(bg.astype(np.uint8), "RGB")
    else:
        bg_color = tuple(int(c) for c in rng.integers(20, 235, 3))
        img = Image.new("RGB", (s, s), bg_color)
    d = ImageDraw.Draw(img)

    cx = 50 + rng.uniform(-6, 6)
    cy = 52 + rng.uniform(-5, 5)
    r = rng.uniform(30, 38)
    skin = np.array(_SKIN_TONES[rng.integers(len(_SKIN_TONES))]) + rng.integers(-15, 16, 3)
    skin_t = tuple(int(c) for c in np.clip(skin, 0, 255))
    ink = (25, 20, 20) if style == "lab" else tuple(int(c) for c in rng.integers(40, 110, 3))
    lw = max(2, int(u(rng.uniform(2.2, 3.2) if style == "lab" else rng.uniform(1.6, 2.4))))

    if style == "photo":
        d.ellipse([u(cx - r * 1.6), u(cy + r * 0.8), u(cx + r * 1.6), u(cy + r * 2.6)],
                  fill=tuple(int(c) for c in rng.integers(0, 255, 3)))  # shoulders
        hair = tuple(int(c) for c in rng.integers(0, 90, 3))
        d.ellipse([u(cx - r * 1.08), u(cy - r * 1.2), u(cx + r * 1.08), u(cy + r * 0.6)], fill=hair)
        d.ellipse([u(cx - r * 0.86), u(cy - r * 1.0), u(cx + r * 0.86), u(cy + r * 1.15)], fill=skin_t)
    else:
        d.ellipse([u(cx - r), u(cy - r * 1.12), u(cx + r), u(cy + r * 1.12)], fill=skin_t, outline=ink, width=lw)

    j = lambda a=1.5: rng.uniform(-a, a)  # noqa: E731 - per-feature jitter
    ex, ey = r * 0.38, cy - r * 0.18  # eye offsets
    # Eyes: height by expression.
    eye_h = {"surprise": 0.2, "fear": 0.19, "anger": 0.06, "disgust": 0.055, "happy": 0.07,
             "sad": 0.09, "neutral": 0.11}[emotion] * r
    eye_w = 0.15 * r
    for side in (-1, 1):
        x = cx + side * ex + j(0.8)
        y = ey + j(0.8)
        if emotion == "happy":  # smiling eyes: arcs
            d.arc([u(x - eye_w), u(y - eye_h * 2), u(x + eye_w), u(y + eye_h * 2)], 200, 340, fill=ink, width=lw)
        else:
            d.ellipse([u(x - eye_w), u(y - eye_h), u(x + eye_w), u(y + eye_h)], fill=(250, 250, 250), outline=ink, width=lw)
            pr = min(eye_h, eye_w) * 0.6
            d.ellipse([u(x - pr), u(y - pr), u(x + pr), u(y + pr)], fill=ink)
    # Brows: (inner height, outer height) above the eye, in units of r.
    brow = {"anger": (0.1, 0.34), "sad": (0.42, 0.2), "surprise": (0.5, 0.48), "fear": (0.46, 0.36),
            "neutral": (0.28, 0.28), "happy": (0.32, 0.3), "disgust": (0.16, 0.26)}[emotion]
    for side in (-1, 1):
        inner_x, outer_x = cx + side * r * 0.12, cx + side * r * 0.62
        lift = brow[0] if not (emotion == "disgust" and side == 1) else brow[0] + 0.12
        d.line([(u(inner_x), u(ey - lift * r + j())), (u(outer_x), u(ey - brow[1] * r + j()))],
               fill=ink, width=lw + 1)
    # Nose.
    d.line([(u(cx), u(cy - r * 0.05)), (u(cx - r * 0.06), u(cy + r * 0.2)), (u(cx + r * 0.04), u(cy + r * 0.22))],
           fill=ink, width=max(1, lw - 1))
    if emotion == "disgust":  # wrinkled nose
        for k in (-1, 1):
            d.line([(u(cx + k * r * 0.1), u(cy + r * 0.02)), (u(cx + k * r * 0.2), u(cy + r * 0.1))], fill=ink, width=max(1, lw - 1))
    # Mouth.
    my = cy + r * 0.52 + j(1.0)
    mw = r * rng.uniform(0.32, 0.42)
    if emotion == "happy":
        d.chord([u(cx - mw * 1.2), u(my - r * 0.25), u(cx + mw * 1.2), u(my + r * 0.22)], 0, 180, fill=(120, 20, 30), outline=ink, width=lw)
    elif emotion == "sad":
        d.arc([u(cx - mw), u(my), u(cx + mw), u(my + r * 0.4)], 200, 340, fill=ink, width=lw)
    elif emotion == "surprise":
        d.ellipse([u(cx - mw * 0.45), u(my - r * 0.16), u(cx + mw * 0.45), u(my + r * 0.24)], fill=(60, 10, 15), outline=ink, width=lw)
    elif emotion == "fear":
        d.rectangle([u(cx - mw * 1.1), u(my - r * 0.06), u(cx + mw * 1.1), u(my + r * 0.12)], fill=(60, 10, 15), outline=ink, width=lw)
        d.line([(u(cx - mw * 1.1), u(my + r * 0.03)), (u(cx + mw * 1.1), u(my + r * 0.03))], fill=(240, 240, 240), width=max(1, lw - 1))
    elif emotion == "anger":
        d.line([(u(cx - mw), u(my + r * 0.08)), (u(cx - mw * 0.4), u(my)), (u(cx + mw * 0.4), u(my)), (u(cx + mw), u(my + r * 0.08))],
               fill=ink, width=lw + 1)
    elif emotion == "neutral":
        d.line([(u(cx - mw * 0.8), u(my)), (u(cx + mw * 0.8), u(my))], fill=ink, width=lw)
    else:  # disgust: raised, asymmetric upper lip
        pts = [(u(cx - mw), u(my + r * 0.04)), (u(cx - mw * 0.3), u(my - r * 0.04)), (u(cx + mw * 0.2), u(my + r * 0.02)),
               (u(cx + mw), u(my - r * 0.12))]
        d.line(pts, fill=ink, width=lw + 1)

    angle = rng.uniform(-10, 10)
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=img.getpixel((0, 0)))
    if style == "photo":
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    noise_sigma = rng.uniform(2, 10) if style == "lab" else rng.uniform(4, 14)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise_sigma, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation -> how the upright picture is turned to get the stored pixels
_STORE_TRANSPOSE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def draw_scene(emotion: str, rng: np.random.Generator, *, size: tuple[int, int] = (320, 240)) -> tuple[Image.Image, tuple[int, int, int]]:
    """A photo-like scene (wall, floor, furniture-ish shapes) with one face at a random place and scale.

    Returns:
        The upright RGB image and the face's (x, y, side) in its pixels.
    """
    width, height = size
    wall = rng.integers(60, 230, 3)
    floor = rng.integers(20, 140, 3)
    horizon = int(height * rng.uniform(0.55, 0.8))
    arr = np.empty((height, width, 3), dtype=np.float32)
    arr[:horizon] = wall
    arr[horizon:] = floor
    arr *= np.linspace(1.1, 0.8, width)[None, :, None]  # light from one side
    scene = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(2, 6))):  # shelves, frames, lamps
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        w, h = int(rng.integers(15, width // 3)), int(rng.integers(15, height // 3))
        shape = d.rectangle if rng.random() < 0.6 else d.ellipse
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    side = int(min(width, height) * rng.uniform(0.25, 0.6))
    face = draw_face(emotion, rng, size=side, style="photo")
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    scene.paste(face, (x, y))
    return scene, (x, y, side)


def save_with_orientation(image: Image.Image, path: Path, orientation: int, *, quality: int = 85) -> None:
    """Save ``image`` (upright) as a phone would: the sensor's pixels plus the EXIF orientation that
    turns them upright (1: as is; 6 and 8: stored sideways)."""
    stored = image.transpose(_STORE_TRANSPOSE[orientation]) if orientation in _STORE_TRANSPOSE else image
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    stored.save(path, exif=exif, quality=quality)


def _rng(seed: int, domain: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, domain)) * 1000 + len(domain), index])


def _balanced_labels(per_class: int, rng: np.random.Generator) -> list[str]:
    labels = [e for e in EMOTIONS for _ in range(per_class)]
    rng.shuffle(labels)
    return labels


def generate_sample(out: str | Path, config: SampleConfig = SampleConfig()) -> dict[str, Path]:
    """Write the sample dataset under ``out`` and return the root of each layout.

    Returns:
        ``{"rafdb": out/rafdb, "fer2013": out/fer2013, "custom": out/custom}``.
    """
    out = Path(out)
    roots = {"rafdb": out / "rafdb", "fer2013": out / "fer2013", "custom": out / "custom"}

    # RAF-DB basic layout.
    basic = roots["rafdb"] / "basic"
    aligned = basic / "Image" / "aligned"
    aligned.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, per_class in (("train", config.rafdb_train_per_class), ("test", config.rafdb_test_per_class)):
        labels = _balanced_labels(per_class, _rng(config.seed, f"rafdb-{split}-order", 0))
        digits = 5 if split == "train" else 4
        for i, emotion in enumerate(labels, start=1):
            name = f"{split}_{i:0{digits}d}"
            face = draw_face(emotion, _rng(config.seed, f"rafdb-{split}", i), size=100)
            face.save(aligned / f"{name}_aligned.jpg", quality=92)
            lines.append(f"{name}.jpg {RAFDB_ID_OF[emotion]}")
    (basic / "EmoLabel").mkdir(parents=True, exist_ok=True)
    atomic_write_text(basic / "EmoLabel" / "list_patition_label.txt", "\n".join(lines) + "\n")

    # FER-2013 csv.
    rows = ["emotion,pixels,Usage"]
    for usage, per_class in (("Training", config.fer_train_per_class), ("PublicTest", config.fer_val_per_class),
                             ("PrivateTest", config.fer_test_per_class)):
        labels = _balanced_labels(per_class, _rng(config.seed, f"fer-{usage}-order", 0))
        for i, emotion in enumerate(labels):
            face = draw_face(emotion, _rng(config.seed, f"fer-{usage}", i), size=48).convert("L")
            pixels = " ".join(map(str, np.asarray(face, dtype=np.uint8).ravel().tolist()))
            rows.append(f"{FER2013_ID_OF[emotion]},{pixels},{usage}")
    roots["fer2013"].mkdir(parents=True, exist_ok=True)
    atomic_write_text(roots["fer2013"] / "fer2013.csv", "\n".join(rows) + "\n")

    # Custom photo folder, the unseen domain.
    for emotion in EMOTIONS:
        folder = roots["custom"] / emotion
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(config.custom_per_class):
            rng = _rng(config.seed, f"custom-{emotion}", i)
            if config.custom_scene_every and i % config.custom_scene_every == config.custom_scene_every - 1:
                scene, _ = draw_scene(emotion, rng, size=(320, 240) if rng.random() < 0.5 else (240, 320))
                orientation = (1, 6, 1, 8)[(i // config.custom_scene_every) % 4]
                save_with_orientation(scene, folder / f"{emotion}_{i:04d}.jpg", orientation, quality=80)
            else:
                face = draw_face(emotion, rng, size=128, style="photo")
                face.save(folder / f"{emotion}_{i:04d}.jpg", quality=80)

    total = (
        len(EMOTIONS) * (config.rafdb_train_per_class + config.rafdb_test_per_class + config.fer_train_per_class
                         + config.fer_val_per_class + config.fer_test_per_class + config.custom_per_class)
    )
    atomic_write_json(out / "sample.json", {
        "generator": "emobench.training.sample", "config": config.__dict__, "images": total,
        "layouts": {k: str(v.relative_to(out)) for k, v in roots.items()},
    })
    log.info("wrote %d sample images under %s", total, out)
    return roots


def contact_sheet(out: Path, *, seed: int = 0, size: int = 64) -> Path:
    """A PNG grid of every expression in both styles, for eyeballing the generator."""
    cols = len(EMOTIONS)
    sheet = Image.new("RGB", (cols * size, 4 * size), (255, 255, 255))
    for c, emotion in enumerate(EMOTIONS):
        for r in range(4):
            style = "lab" if r < 2 else "photo"
            face = draw_face(emotion, _rng(seed, f"sheet-{style}", c * 10 + r), size=size, style=style)
            sheet.paste(face, (c * size, r * size))
    sheet.save(out)
    return out


__all__ = ["SampleConfig", "contact_sheet", "draw_face", "draw_scene", "generate_sample", "save_with_orientation"]
