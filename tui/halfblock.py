"""Images drawn in a terminal with half-block cells: two pixels per character.

Each character is ``▀``: its foreground colour is the upper pixel and its background the
lower one, so a ``w x h`` cell area shows ``w x 2h`` pixels. Used for the prediction
preview (image, target, prediction side by side). Pure: uint8 arrays in, Rich text out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text

UPPER_HALF = "▀"


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(h, w) grey or (h, w, 3) colour uint8 -> (h, w, 3) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"an image to draw must be uint8, got {image.dtype}; scale it to 0..255 first")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    raise ValueError(f"an image to draw must be (h, w) or (h, w, 3), got shape {image.shape}")


def fit_size(height: int, width: int, max_cols: int, max_rows: int) -> tuple[int, int]:
    """Cell size (cols, rows) that shows an ``height x width`` image as large as fits,
    keeping its aspect ratio (a cell is one pixel wide and two pixels tall)."""
    if height <= 0 or width <= 0 or max_cols <= 0 or max_rows <= 0:
        return 0, 0
    scale = min(max_cols / width, (2 * max_rows) / height)
    cols = max(1, min(max_cols, int(width * scale)))
    rows = max(1, min(max_rows, int(round(height * scale / 2))))
    return cols, rows


def resize_area(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize an (h, w, 3) uint8 image by averaging the source pixels under each target pixel
    (thin vessels fade instead of vanishing, which nearest-neighbour would do)."""
    h, w = image.shape[:2]
    ys = np.linspace(0, h, out_h + 1).astype(np.int64)
    xs = np.linspace(0, w, out_w + 1).astype(np.int64)
    ys[1:] = np.maximum(ys[1:], ys[:-1] + 1)
    xs[1:] = np.maximum(xs[1:], xs[:-1] + 1)
    ys = np.minimum(ys, h)
    xs = np.minimum(xs, w)
    integral = np.zeros((h + 1, w + 1, 3), dtype=np.float64)
    integral[1:, 1:] = image.astype(np.float64).cumsum(0).cumsum(1)
    y0, y1 = ys[:-1, None], ys[1:, None]
    x0, x1 = xs[None, :-1], xs[None, 1:]
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = ((y1 - y0) * (x1 - x0))[:, :, None]
    return np.clip(np.rint(total / np.maximum(area, 1)), 0, 255).astype(np.uint8)


def render_halfblock(image: np.ndarray, cols: int, rows: int) -> list[Text]:
    """An image as ``rows`` lines of ``cols`` half-block cells (the image is resized to
    ``cols x 2*rows`` pixels)."""
    rgb = _as_rgb(image)
    if cols <= 0 or rows <= 0:
        return []
    pixels = resize_area(rgb, 2 * rows, cols)
    lines = []
    for r in range(rows):
        top, bottom = pixels[2 * r], pixels[2 * r + 1]
        line = Text(no_wrap=True)
        for c in range(cols):
            style = Style(
                color=Color.from_rgb(*(int(v) for v in top[c])),
                bgcolor=Color.from_rgb(*(int(v) for v in bottom[c])),
            )
            line.append(UPPER_HALF, style=style)
        lines.append(line)
    return lines


def render_side_by_side(images: Sequence[tuple[str, np.ndarray]], width: int, height: int, gap: int = 2) -> Text:
    """Several labelled images next to each other in ``width x height`` cells.

    The first line carries the labels; each image gets an equal share of the width. Used
    for the preview: ("image", ...), ("target", ...), ("prediction", ...).
    """
    if not images or width <= 0 or height <= 1:
        return Text("")
    share = (width - gap * (len(images) - 1)) // len(images)
    if share < 2:
        return Text("(too narrow for the preview)", style="bright_black")
    blocks = []
    for _, image in images:
        image = np.asarray(image)
        cols, rows = fit_size(image.shape[0], image.shape[1], share, height - 1)
        blocks.append((cols, render_halfblock(image, cols, rows)))
    out = Text(no_wrap=True, overflow="crop")
    for i, (label, _) in enumerate(images):
        if i:
            out.append(" " * gap)
        out.append(label[:share].ljust(share), style="bold")
    depth = max((len(lines) for _, lines in blocks), default=0)
    for r in range(depth):
        out.append("\n")
        for i, (cols, lines) in enumerate(blocks):
            if i:
                out.append(" " * gap)
            if r < len(lines):
                out.append_text(lines[r])
                out.append(" " * (share - cols))
            else:
                out.append(" " * share)
    return out
