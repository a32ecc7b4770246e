"""Synthetic digits: printed digits 0-9 on random backgrounds, as 28 x 28 grayscale uint8 images.

A deterministic renderer in the spirit of the "Synthetic Digits" dataset (Kaggle
``prasunroy/synthetic-digits``: digits in varied fonts, colours, scales and rotations on natural
image backgrounds). Each image is drawn at 56 x 56 in colour with Pillow and numpy, then converted
to luminance (ITU-R 601-2, as Pillow's ``"L"`` mode) and averaged down 2 x 2 to 28 x 28:

- background: a random base colour with one of four structures (multi-scale smooth noise, a
  linear gradient, soft colour blobs, a sine texture), sometimes overlaid with translucent lines,
  ellipses and rectangles, plus per-pixel colour noise;
- digit: one of 12 DejaVu faces bundled with matplotlib (Sans, Serif, Mono; regular, bold,
  oblique/italic), three stroke weights, a random affine map (scale, aspect, shear, rotation up
  to 12 degrees, offset), sometimes a drop shadow or an outline, in a random colour whose
  luminance stands at least 90 levels off the background under the glyph.

Image ``i`` of seed ``s`` depends only on ``np.random.default_rng([s, i])``, so it is the same
whatever batch it is rendered in; its label is ``i % 10``. Training images use indices
``0, 1, ...`` and test images indices ``TEST_START, TEST_START + 1, ...``.

On disk, rendered sets are cached as ``.npz`` archives with arrays ``x_train`` (uint8
``(n_train, 28, 28)``), ``y_train`` (uint8 ``(n_train,)``), ``x_test`` and ``y_test``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from byzmtl.datasets.errors import DatasetError

if TYPE_CHECKING:  # PIL and matplotlib are imported where used: most runs render no digit
    from PIL import Image, ImageFont

#: Bump whenever a change alters any rendered pixel: it is part of the cache key.
RENDERER_VERSION = 1
#: Index of the first test image (training images count up from 0).
TEST_START = 1_000_000_000
SOURCE_URL = "https://www.kaggle.com/datasets/prasunroy/synthetic-digits"

_CANVAS = 56
_SIZE = 28
_FONT_SIZE = 40
_FACES = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_CONTRAST = 90.0
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_GRID = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32)  # (y, x) pixel coordinates


@dataclass(frozen=True, eq=False)
class DigitsDataset:
    """Digit images ``uint8 (n, 28, 28)`` and labels ``uint8 (n,)`` in 0..9 for two splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@cache
def _font(face: str) -> ImageFont.FreeTypeFont:
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{face}.ttf"
    if not path.is_file():
        raise DatasetError(
            f"{path}: expected matplotlib's bundled DejaVu font {face}.ttf, found no such file"
        )
    return ImageFont.truetype(str(path), _FONT_SIZE)


@cache
def _glyph(face: str, digit: int, stroke: int) -> Image.Image:
    """Mask (mode "L", canvas size) of a digit centred on the canvas; the centre is that of the
    unstroked glyph, so masks of different strokes line up."""
    from PIL import Image, ImageDraw

    font = _font(face)
    left, top, right, bottom = font.getbbox(str(digit))
    origin = (_CANVAS / 2 - (left + right) / 2, _CANVAS / 2 - (top + bottom) / 2)
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    ImageDraw.Draw(mask).text(origin, str(digit), fill=255, font=font, stroke_width=stroke)
    return mask


@cache
def _smooth_basis(cells: int) -> np.ndarray:
    """``(canvas, cells)`` row-normalised Gaussian interpolation weights: ``B @ G @ B.T`` turns a
    ``cells x cells`` grid of values into a smooth canvas-sized field."""
    centres = (np.arange(cells, dtype=np.float32) + 0.5) * (_CANVAS / cells)
    pixels = np.arange(_CANVAS, dtype=np.float32)[:, None] + 0.5
    weights = np.exp(-0.5 * ((pixels - centres) / (_CANVAS / cells)) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def _smooth_noise(rng: np.random.Generator, cells: int, amplitude: float) -> np.ndarray:
    basis = _smooth_basis(cells)
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells, 3)).astype(np.float32)
    return (basis @ grid.transpose(2, 0, 1) @ basis.T).transpose(1, 2, 0)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A float32 ``(canvas, canvas, 3)`` RGB background, values roughly in 0..255."""
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    kind = rng.integers(4)
    y, x = _GRID / _CANVAS
    if kind == 0:  # smooth noise at two scales
        field = _smooth_noise(rng, int(rng.integers(2, 6)), rng.uniform(20, 70))
        field += _smooth_noise(rng, int(rng.integers(7, 15)), rng.uniform(5, 30))
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5))[..., None]
        field = ramp * rng.uniform(-120, 120, size=3).astype(np.float32)
    elif kind == 2:  # soft blobs
        field = np.zeros((_CANVAS, _CANVAS, 3), dtype=np.float32)
        for _ in range(int(rng.integers(2, 7))):
            cy, cx = rng.uniform(0, 1, size=2)
            radius = rng.uniform(0.08, 0.35)
            blob = np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / radius**2)[..., None]
            field += blob * rng.uniform(-90, 90, size=3).astype(np.float32)
    else:  # sine texture, one or two waves
        field = np.zeros((_CANVAS, _CANVAS, 3), dtype=np.float32)
        for _ in range(int(rng.integers(1, 3))):
            angle, phase = rng.uniform(0, 2 * np.pi, size=2)
            cycles = rng.uniform(1.5, 7)
            wave = np.sin(2 * np.pi * cycles * (np.cos(angle) * x + np.sin(angle) * y) + phase)
            field += wave[..., None] * rng.uniform(-50, 50, size=3).astype(np.float32)
    image = base + field
    if rng.random() < 0.5:
        image = _overlay_shapes(rng, image)
    image += rng.uniform(0, 15) * rng.standard_normal(size=image.shape, dtype=np.float32)
    return image


def _overlay_shapes(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Blend random lines, ellipses and rectangles over the image at partial opacity."""
    from PIL import Image, ImageDraw

    layer = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    mean = image.mean(axis=(0, 1))
    for _ in range(int(rng.integers(1, 6))):
        colour = tuple(int(c) for c in np.clip(mean + rng.uniform(-110, 110, size=3), 0, 255))
        x0, y0, x1, y1 = rng.uniform(-10, _CANVAS + 10, size=4)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        shape = rng.integers(3)
        if shape == 0:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 6)))
        elif shape == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    opacity = rng.uniform(0.25, 0.6)
    return (1 - opacity) * image + opacity * np.asarray(layer, dtype=np.float32)


def _colour_with_luma(rng: np.random.Generator, luma: float) -> np.ndarray:
    """A random RGB colour of (about, after clipping) the given luminance."""
    chroma = rng.uniform(-1, 1, size=3).astype(np.float32)
    chroma -= chroma @ _LUMA  # the luma weights sum to 1, so this has zero luminance
    chroma *= rng.uniform(0, 120) / max(float(np.abs(chroma).max()), 1e-6)
    return np.clip(luma + chroma, 0, 255)


def _warp(mask: Image.Image, inverse: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Apply the affine map ``p_in = inverse @ p_out + offset`` to a mask; float32 in 0..1."""
    from PIL import Image

    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    warped = mask.transform(
        mask.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(warped, dtype=np.float32) / 255.0


def _render_one(seed: int, index: int) -> np.ndarray:
    """Image ``index`` of ``seed``: uint8 ``(28, 28)`` showing digit ``index % 10``."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng)
    face = _FACES[rng.integers(len(_FACES))]
    stroke = int(rng.integers(3))
    digit = index % 10

    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.8, 1.3)
    aspect = rng.uniform(0.8, 1.2)
    shear = rng.uniform(-0.12, 0.12)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale])
    inverse = np.linalg.inv(forward)
    centre = np.full(2, _CANVAS / 2)
    shift = rng.uniform(-5, 5, size=2)
    offset = centre - inverse @ (centre + shift)

    fill = _warp(_glyph(face, digit, stroke), inverse, offset)
    under = float((image @ _LUMA * fill).sum() / max(fill.sum(), 1e-6))
    light = under < 127.5
    low, high = (
        (min(under + _MIN_CONTRAST, 255.0), 255.0) if light else (0.0, under - _MIN_CONTRAST)
    )
    colour = _colour_with_luma(rng, rng.uniform(low, high))

    effect = rng.random()
    if effect < 0.2:  # drop shadow, in the tone opposite to the digit's
        dx, dy = rng.uniform(1.5, 3.5, size=2) * rng.choice([-1, 1], size=2)
        shadow = _warp(_glyph(face, digit, stroke), inverse, offset - inverse @ (dx, dy))
        shade = np.full(3, 0.0 if light else 255.0, dtype=np.float32)
        image += (shade - image) * (0.6 * shadow)[..., None]
    elif effect < 0.4:  # outline in the opposite tone
        outline = _warp(_glyph(face, digit, stroke + 3), inverse, offset)
        edge = _colour_with_luma(rng, rng.uniform(0, 60) if light else rng.uniform(195, 255))
        image += (edge - image) * outline[..., None]
    image += (colour - image) * fill[..., None]

    luma = np.clip(image, 0, 255) @ _LUMA
    small = luma.reshape(_SIZE, 2, _SIZE, 2).mean(axis=(1, 3))
    return np.rint(small).astype(np.uint8)


def render_digits(n: int, seed: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render images ``start .. start + n - 1`` of ``seed``.

    Returns images ``uint8 (n, 28, 28)`` and labels ``uint8 (n,)`` with label ``i % 10`` for
    image ``i``. Image ``i`` is identical whatever ``n`` and ``start`` it is rendered with.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, not {n} and {start}")
    images = np.empty((n, _SIZE, _SIZE), dtype=np.uint8)
    for k in range(n):
        images[k] = _render_one(seed, start + k)
    labels = (np.arange(start, start + n) % 10).astype(np.uint8)
    return images, labels


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("BYZMTL_CACHE") or Path.home() / ".cache" / "byzmtl")


def _read_cache(path: Path, n_train: int, n_test: int) -> DigitsDataset | None:
    """The cached arrays, or None when the file is missing, unreadable or of the wrong shape."""
    try:
        with np.load(path) as archive:
            data = DigitsDataset(
                *(archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    shapes = (data.x_train.shape, data.y_train.shape, data.x_test.shape, data.y_test.shape)
    if shapes != ((n_train, _SIZE, _SIZE), (n_train,), (n_test, _SIZE, _SIZE), (n_test,)):
        return None
    return data


def _write_cache(path: Path, data: DigitsDataset) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        try:
            np.savez(tmp, **vars(data))
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def load_synthetic_digits(
    n_train: int,
    n_test: int,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
) -> DigitsDataset:
    """``n_train`` training and ``n_test`` test digit images, rendered or read from disk.

    Without ``source_dir`` the images are rendered (see the module docstring) and cached in
    ``cache_dir`` (default ``$BYZMTL_CACHE``, else ``~/.cache/byzmtl``) under a name holding
    ``(n_train, n_test, seed, RENDERER_VERSION)``; a missing or unreadable cache is re-rendered.

    With ``source_dir``, images are read instead from a copy of the original Synthetic Digits
    dataset: ``imgs_train/<digit>/*.png|jpg`` and ``imgs_valid/<digit>/*`` (``source_dir`` may
    also be the folder containing ``synthetic_digits/``). Each class's files are shuffled with
    ``seed`` and the classes interleaved, so any prefix is balanced; images are converted to
    grayscale and resized to 28 x 28.
    """
    if source_dir is not None:
        root = Path(source_dir)
        if not (root / "imgs_train").is_dir() and (root / "synthetic_digits").is_dir():
            root = root / "synthetic_digits"
        x_train, y_train = _read_image_folder(root / "imgs_train", n_train, seed)
        x_test, y_test = _read_image_folder(root / "imgs_valid", n_test, seed)
        return DigitsDataset(x_train, y_train, x_test, y_test)
    name = f"synthetic_digits_v{RENDERER_VERSION}_seed{seed}_train{n_train}_test{n_test}.npz"
    path = _cache_dir(cache_dir) / name
    cached = _read_cache(path, n_train, n_test)
    if cached is not None:
        return cached
    data = DigitsDataset(*render_digits(n_train, seed), *render_digits(n_test, seed, TEST_START))
    try:
        _write_cache(path, data)
    except OSError as exc:
        warnings.warn(f"could not cache synthetic digits at {path}: {exc}", stacklevel=2)
    return data


def _read_image_folder(folder: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``folder/<digit>/``, classes interleaved after a seeded shuffle."""
    from PIL import Image

    hint = f"the Synthetic Digits dataset is available from {SOURCE_URL}"
    per_class = []
    for digit in range(10):
        sub = folder / str(digit)
        files = sorted(p for p in sub.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(
                f"{sub}: expected a folder of .png/.jpg images of digit {digit} "
                f"(layout imgs_train/<digit>/, imgs_valid/<digit>/), found "
                f"{'no images' if sub.is_dir() else 'no such folder'}; {hint}"
            )
        order = np.random.default_rng([seed, digit]).permutation(len(files))
        per_class.append([files[k] for k in order])
    interleaved = [
        (files[rank], digit)
        for rank in range(max(len(files) for files in per_class))
        for digit, files in enumerate(per_class)
        if rank < len(files)
    ]
    if n > len(interleaved):
        raise DatasetError(
            f"{folder}: expected at least {n} images, found {len(interleaved)}; {hint}"
        )
    images = np.empty((n, _SIZE, _SIZE), dtype=np.uint8)
    for k, (path, _) in enumerate(interleaved[:n]):
        try:
            with Image.open(path) as image:
                images[k] = np.asarray(
                    image.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS)
                )
        except OSError as exc:  # includes PIL.UnidentifiedImageError
            raise DatasetError(f"{path}: expected a readable image, found {exc}; {hint}") from exc
    labels = np.array([digit for _, digit in interleaved[:n]], dtype=np.uint8)
    return images, labels
