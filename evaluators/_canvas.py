"""Canvases shown to the VLM judge: the numbered profile grid and the labelled methods strip.

Both canvases share one layout: cells in a grid, each cell a label band on top of a square image tile::

    gap | label band | gap | label band | gap
        | tile       |     | tile       |
    gap ...

Images are letterboxed into their tile (aspect ratio kept, nothing cropped). The layout is a pure function
(:func:`grid_layout`) so tests and callers can find every tile and label without drawing anything.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from vptt.core.errors import ConfigError

ImageInput = Union[str, Path, Image.Image]
"""An image given as a path or as a PIL image."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
RGB = tuple[int, int, int]
PostSelection = Literal["matched", "first"]
"""How the profile canvas picks its posts: the ones matched to the generated prompts, or the first ones."""


@dataclass(frozen=True)
class Box:
    """A pixel rectangle in PIL convention: ``left <= x < right``, ``top <= y < bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def center(self) -> tuple[int, int]:
        """The ``(x, y)`` pixel at the middle of the box."""
        return ((self.left + self.right) // 2, (self.top + self.bottom) // 2)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """The box as PIL's ``(left, top, right, bottom)``."""
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True)
class GridLayout:
    """Where each cell's label band and image tile lie on a canvas of ``width`` x ``height``."""

    width: int
    height: int
    tiles: tuple[Box, ...]
    labels: tuple[Box, ...]


def grid_layout(n: int, *, cols: int, tile: int, label_height: int, gap: int) -> GridLayout:
    """Compute a grid of ``n`` cells filled row by row, ``min(n, cols)`` columns wide.

    Args:
        n: Number of cells (at least 1).
        cols: Maximum number of columns.
        tile: Side of the square image tile in pixels.
        label_height: Height of the label band above each tile.
        gap: Margin around and between cells.

    Returns:
        The layout; ``tiles[i]`` and ``labels[i]`` belong to cell ``i``.

    Example:
        >>> g = grid_layout(10, cols=5, tile=100, label_height=20, gap=4)
        >>> (g.width, g.height), g.tiles[6]
        ((524, 252), Box(left=108, top=148, right=208, bottom=248))
    """
    if n < 1 or cols < 1 or tile < 1 or label_height < 1 or gap < 0:
        raise ConfigError(
            f"grid_layout needs n, cols, tile, label_height >= 1 and gap >= 0; got n={n}, cols={cols}, "
            f"tile={tile}, label_height={label_height}, gap={gap}"
        )
    ncols = min(n, cols)
    nrows = -(-n // ncols)
    cell_h = label_height + tile
    tiles, labels = [], []
    for i in range(n):
        x0 = gap + (i % ncols) * (tile + gap)
        y0 = gap + (i // ncols) * (cell_h + gap)
        labels.append(Box(x0, y0, x0 + tile, y0 + label_height))
        tiles.append(Box(x0, y0 + label_height, x0 + tile, y0 + cell_h))
    return GridLayout(gap + ncols * (tile + gap), gap + nrows * (cell_h + gap), tuple(tiles), tuple(labels))


def load_image(src: ImageInput) -> Image.Image:
    """Open ``src`` (path or PIL image) as an RGB image; a missing file raises ``ConfigError``."""
    if isinstance(src, Image.Image):
        return src.convert("RGB")
    path = Path(src)
    if not path.is_file():
        raise ConfigError(f"image file not found: {path}; pass an existing image path or a PIL image")
    with Image.open(path) as img:
        return img.convert("RGB")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"not a directory: {root}")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow built without FreeType: small bitmap font
        return ImageFont.load_default()


def _draw_label(draw: ImageDraw.ImageDraw, box: Box, text: str, fill: RGB, ink: RGB) -> None:
    draw.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), fill=fill)
    font = _font(max(8, int((box.bottom - box.top) * 0.75)))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    cx, cy = box.center
    draw.text((cx - (x0 + x1) / 2, cy - (y0 + y1) / 2), text, font=font, fill=ink)


def draw_grid(
    images: Sequence[ImageInput],
    labels: Sequence[str],
    *,
    cols: int,
    tile: int,
    label_height: int,
    gap: int = 8,
    background: RGB = (255, 255, 255),
    label_fill: RGB = (0, 0, 0),
    label_ink: RGB = (255, 255, 255),
) -> Image.Image:
    """Tile ``images`` into a grid, each under a label band carrying ``labels[i]``."""
    if len(images) != len(labels):
        raise ConfigError(f"draw_grid got {len(images)} images but {len(labels)} labels")
    layout = grid_layout(len(images), cols=cols, tile=tile, label_height=label_height, gap=gap)
    canvas = Image.new("RGB", (layout.width, layout.height), background)
    draw = ImageDraw.Draw(canvas)
    for src, text, tbox, lbox in zip(images, labels, layout.tiles, layout.labels):
        fitted = ImageOps.pad(load_image(src), (tile, tile), color=background)
        canvas.paste(fitted, (tbox.left, tbox.top))
        _draw_label(draw, lbox, text, label_fill, label_ink)
    return canvas


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} must be a non-empty finite (n, D) matrix, got shape {np.shape(x)}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def match_scores(caption_embs: np.ndarray, prompt_embs: np.ndarray) -> np.ndarray:
    """Each post's mean cosine between its caption embedding and the generated prompt(s).

    With one prompt this is the cosine to it; with several (every method judged on one canvas) it is the
    mean over them, which ranks posts like the cosine to the prompts' centroid and favours no method.
    """
    c, p = _unit_rows(caption_embs, "caption_embs"), _unit_rows(prompt_embs, "prompt_embs")
    if c.shape[1] != p.shape[1]:
        raise ConfigError(f"caption and prompt embeddings differ in size: {c.shape[1]} vs {p.shape[1]}")
    return (c @ p.T).mean(axis=1)


def select_profile_posts(n_posts: int, *, max_images: int = 10, mode: PostSelection = "matched",
                         caption_embs: np.ndarray | None = None,
                         prompt_embs: np.ndarray | None = None) -> list[int]:
    """Which of ``n_posts`` posts the profile canvas shows, as indices in post order.

    ``"matched"`` (the default, the paper's "visually and semantically matched posts"): the ``max_images``
    posts of highest :func:`match_scores`, ties broken by post order (earlier first). ``"first"``: the first
    ``max_images`` posts. When there are no more posts than places, every post is shown in both modes.

    Example:
        >>> caps = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        >>> select_profile_posts(3, max_images=2, caption_embs=caps, prompt_embs=np.array([[0.0, 1.0]]))
        [1, 2]
    """
    if n_posts < 0 or max_images < 1:
        raise ConfigError(f"need n_posts >= 0 and max_images >= 1, got {n_posts} and {max_images}")
    if mode not in ("matched", "first"):
        raise ConfigError(f"profile post selection must be 'matched' or 'first', got {mode!r}")
    if n_posts <= max_images:
        return list(range(n_posts))
    if mode == "first":
        return list(range(max_images))
    if caption_embs is None or prompt_embs is None:
        raise ConfigError(f"matching {max_images} of {n_posts} posts to the generated prompt needs the "
                          "posts' caption embeddings and the prompt embeddings; pass them, or choose the "
                          "first posts (profile_posts='first', CLI --posts first)")
    scores = match_scores(caption_embs, prompt_embs)
    if scores.shape[0] != n_posts:
        raise ConfigError(f"got {scores.shape[0]} caption embeddings for {n_posts} posts")
    order = np.lexsort((np.arange(n_posts), -scores))  # by score, descending; ties: earlier post first
    return sorted(int(i) for i in order[:max_images])


def profile_canvas(
    images: Sequence[ImageInput], *, max_images: int = 10, cols: int = 5, tile: int = 256,
    label_height: int = 32, gap: int = 8,
) -> Image.Image:
    """The paper's profile canvas: up to ``max_images`` posts in a 5 x 2 grid, numbered 1..n.

    Only the first ``max_images`` images are used; fewer than ``cols`` images make a single row.
    """
    if not images:
        raise ConfigError("profile_canvas needs at least one persona image")
    chosen = list(images)[:max_images]
    numbers = [str(i + 1) for i in range(len(chosen))]
    return draw_grid(chosen, numbers, cols=cols, tile=tile, label_height=label_height, gap=gap)


def methods_canvas(
    images: Sequence[ImageInput], labels: Sequence[str], *, tile: int = 384, label_height: int = 40,
    gap: int = 8,
) -> Image.Image:
    """The paper's methods canvas: the generated images side by side (one row), labelled A, B, ..."""
    if not images:
        raise ConfigError("methods_canvas needs at least one image")
    return draw_grid(images, labels, cols=len(images), tile=tile, label_height=label_height, gap=gap)


def image_to_data_url(image: Image.Image, fmt: str = "png", quality: int = 90) -> str:
    """Encode ``image`` as a ``data:image/...;base64,`` URL (``fmt`` is ``"png"`` or ``"jpeg"``)."""
    fmt = fmt.lower()
    if fmt not in ("png", "jpeg"):
        raise ConfigError(f"image format must be 'png' or 'jpeg', got {fmt!r}")
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
