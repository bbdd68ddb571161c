"""Synthetic data, seeded and fast: OCTA-like vessel trees with masks, and CRAFT-style text heatmaps.

The vessel generator is what ``octa-tui demo`` and ``octa-train --synthetic N`` train on, and
its switches reproduce seed 000's data faults: ``soft_masks=True`` saves anti-aliased masks
with many grey levels (section 1a), ``foreground="low"`` draws about 1% foreground (1b).
Drawing is vectorised numpy: curves are sampled as points and stamped as discs in one
scatter, so a thousand 64x64 images take a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOREGROUND_LEVELS = ("normal", "low")
_CHUNK = 256  # images drawn per vectorised batch (bounds temporary memory)


def _check_common(n: int, size: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer of at least 16 pixels, got {size!r}")


_STEP = 0.7  # pixels between consecutive curve points: stamped discs leave no gaps


def _walk(
    rng: np.random.Generator, start: np.ndarray, heading: np.ndarray, steps: int, bend: float
) -> np.ndarray:
    """Smooth random curves: (m, steps, 2) points from ``start`` (m, 2) along ``heading`` (m,).

    The curvature is a bounded random walk, so the heading drifts smoothly: vessels bend
    with radii of tens of pixels, they neither zigzag nor curl up.
    """
    m = start.shape[0]
    curvature = np.cumsum(rng.normal(0.0, bend * 0.004, size=(m, steps)), axis=1)
    curvature = np.clip(curvature + rng.normal(0.0, bend * 0.01, size=(m, 1)), -bend * 0.03, bend * 0.03)
    angle = heading[:, None] + np.cumsum(curvature, axis=1)
    x = start[:, 0:1] + np.cumsum(np.cos(angle) * _STEP, axis=1)
    y = start[:, 1:2] + np.cumsum(np.sin(angle) * _STEP, axis=1)
    return np.stack([x, y], axis=-1).astype(np.float32)


def _vessel_points(
    rng: np.random.Generator, count: int, size: int, low: bool, vessel_width: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of every vessel of ``count`` images: (image index, xy, radius) as flat arrays.

    Normal foreground: two trunks entering from the border, each branching twice, and
    each branch branching again (a tree of 14 segments, widths shrinking at each branching).
    Low foreground: one short thin vessel near the centre, about 1% of the image.
    """
    w_min, w_max = vessel_width
    scale = 64.0 / size  # bends keep the same shape at any image size
    if low:
        # About 1% of the pixels: a thin vessel (width 1) whose length is ~1% of the area.
        steps = int(round(0.0095 * size * size / max(w_min, 1.0) / _STEP))
        start = size / 2.0 + rng.uniform(-size / 8, size / 8, size=(count, 2))
        heading = rng.uniform(0, 2 * np.pi, size=count)
        pts = _walk(rng, start, heading, steps, bend=1.5 * scale)
        pts = pts - pts.mean(axis=1, keepdims=True) + start[:, None, :]  # keep the vessel in view
        radius = np.full((count, steps), max(w_min, 1.0) / 2.0)
        index = np.repeat(np.arange(count), steps)
        return index, pts.reshape(-1, 2), radius.reshape(-1)

    indices, points, radii = [], [], []
    steps = int(size * 1.1 / _STEP)  # a trunk crosses most of the image
    # Trunks enter from a random border point heading towards the middle.
    trunks = 2
    side = rng.integers(0, 4, size=(count, trunks))
    along = rng.uniform(0.15 * size, 0.85 * size, size=(count, trunks))
    start = np.stack(
        [
            np.select(
                [side == 0, side == 1, side == 2],
                [np.zeros_like(along), np.full_like(along, size - 1), along],
                along,
            ),
            np.select(
                [side == 0, side == 1, side == 2],
                [along, along, np.zeros_like(along)],
                np.full_like(along, size - 1),
            ),
        ],
        axis=-1,
    ).reshape(-1, 2)
    centre = size / 2.0 + rng.uniform(-size / 6, size / 6, size=(count * trunks, 2))
    heading = np.arctan2(centre[:, 1] - start[:, 1], centre[:, 0] - start[:, 0])
    owner = np.repeat(np.arange(count), trunks)
    level_pts = _walk(rng, start, heading, steps, bend=1.0 * scale)
    width = rng.uniform(0.75 * w_max, w_max, size=count * trunks)
    for level in range(3):
        m = level_pts.shape[0]
        radius = np.broadcast_to((width / 2.0).astype(np.float32)[:, None], level_pts.shape[:2])
        indices.append(np.repeat(owner, level_pts.shape[1]))
        points.append(level_pts.reshape(-1, 2))
        radii.append(radius.reshape(-1))
        if level == 2:
            break
        # Each segment gives two branches, from random points in its first 3/4, at +-(25..60) deg.
        children = 2
        at = rng.integers(level_pts.shape[1] // 8, 3 * level_pts.shape[1] // 4, size=(m, children))
        origin = np.take_along_axis(level_pts, at[..., None].repeat(2, axis=-1), axis=1).reshape(-1, 2)
        prev = np.take_along_axis(level_pts, np.maximum(at - 1, 0)[..., None].repeat(2, axis=-1), axis=1)
        direction = (origin.reshape(m, children, 2) - prev).reshape(-1, 2)
        parent_heading = np.arctan2(direction[:, 1], direction[:, 0])
        sign = np.where(rng.random(m * children) < 0.5, -1.0, 1.0)
        heading = parent_heading + sign * rng.uniform(0.45, 1.05, size=m * children)
        owner = np.repeat(owner, children)
        steps = max(int(steps * 0.6), 8)
        level_pts = _walk(rng, origin, heading, steps, bend=1.3 * scale)
        width = np.maximum(np.repeat(width, children) * rng.uniform(0.55, 0.8, size=m * children), w_min)
    return np.concatenate(indices), np.concatenate(points), np.concatenate(radii)


def _stamp_discs(
    count: int, size: int, index: np.ndarray, xy: np.ndarray, radius: np.ndarray, soft: bool = False
) -> np.ndarray:
    """Discs of ``radius`` stamped at every point on a (count, size, size) canvas.

    Binary (``soft=False``): a pixel is inked when its centre lies within the disc, and the
    nearest pixel always is, so width-1 vessels are continuous lines. Anti-aliased
    (``soft=True``): each pixel gets the coverage ``clip(radius + 0.5 - distance, 0, 1)`` as a
    float, which is above 0.5 exactly where the binary mask is inked, with many grey levels
    along the edges. Points are grouped by how far their disc can reach, so thin vessels
    test few pixels per point.
    """
    canvas = np.zeros(count * size * size, dtype=np.float32 if soft else bool)
    margin = 1.0 if soft else 0.5  # a pixel at offset o is >= |o| - 0.5 away from the point
    reach_of = np.floor(radius + margin).astype(np.int32)
    for reach in np.unique(reach_of):
        pick = reach_of == reach
        pxy, prad, pidx = xy[pick], radius[pick], index[pick].astype(np.int32)
        offsets = np.arange(-reach, reach + 1, dtype=np.int32)
        ox, oy = (a.reshape(-1) for a in np.meshgrid(offsets, offsets, indexing="xy"))
        cx, cy = np.rint(pxy[:, 0]).astype(np.int32), np.rint(pxy[:, 1]).astype(np.int32)
        px, py = cx[:, None] + ox[None, :], cy[:, None] + oy[None, :]
        d2 = (px - pxy[:, 0:1]) ** 2 + (py - pxy[:, 1:2]) ** 2
        nearest = ((ox == 0) & (oy == 0))[None, :]
        in_view = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        flat = (pidx[:, None] * size + py) * size + px
        if soft:
            coverage = np.clip(prad[:, None] + 0.5 - np.sqrt(d2), 0.0, 1.0)
            coverage = np.where(nearest, np.maximum(coverage, 0.51), coverage)
            keep = in_view & (coverage > 0)
            np.maximum.at(canvas, flat[keep], coverage[keep].astype(np.float32))
        else:
            inside = ((d2 <= prad[:, None] ** 2) | nearest) & in_view
            canvas[flat[inside]] = True
    return canvas.reshape(count, size, size)


def _box_blur(images: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur of (n, h, w) float arrays, edges replicated (used twice ~ Gaussian)."""
    if radius < 1:
        return images
    k = 2 * radius + 1
    out = images
    for axis in (1, 2):
        padded = np.pad(
            out, [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2)], mode="edge"
        )
        csum = np.cumsum(padded, axis=axis, dtype=np.float32)
        zero = np.zeros_like(np.take(csum, [0], axis=axis))
        csum = np.concatenate([zero, csum], axis=axis)
        n = out.shape[axis]
        out = (np.take(csum, np.arange(k, k + n), axis=axis) - np.take(csum, np.arange(0, n), axis=axis)) / k
    return out


def _render_vessel_images(rng: np.random.Generator, masks: np.ndarray, contrast: float) -> np.ndarray:
    """OCTA-looking grey images: bright, slightly blurred vessels on a dark speckled background."""
    count, size, _ = masks.shape
    vessel = _box_blur(masks.astype(np.float32), 1)
    # Vessel brightness varies along the image (flow signal is not uniform).
    coarse = rng.uniform(0.6, 1.0, size=(count, size // 8 + 1, size // 8 + 1)).astype(np.float32)
    shade = _box_blur(np.kron(coarse, np.ones((8, 8), dtype=np.float32))[:, :size, :size], 4)
    background = rng.uniform(15.0, 45.0, size=(count, 1, 1)).astype(np.float32)
    speckle = (
        rng.standard_gamma(2.0, size=(count, size, size), dtype=np.float32) * 0.5
    )  # mean 1, multiplicative
    brightness = rng.uniform(150.0, 230.0, size=(count, 1, 1)).astype(np.float32)
    image = background * speckle + vessel * shade * contrast * (brightness - background)
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * 8.0
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def synthetic_vessels(
    n: int,
    size: int = 64,
    seed: int = 0,
    soft_masks: bool = False,
    foreground: str = "normal",
    vessel_width: tuple[float, float] = (1.0, 3.0),
    contrast: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` OCTA-like images and their vessel masks, the same for the same arguments.

    Returns ``images`` uint8 (n, size, size, 3) and ``masks`` uint8 (n, size, size) with
    values {0, 255} - or, with ``soft_masks=True``, anti-aliased masks with many grey levels
    (the seed's "mask has 256 unique values" fault; thresholding at 127 recovers the binary
    mask). The images are the same with or without ``soft_masks``.
    ``foreground="normal"`` draws a branching tree (roughly 10-20% of the pixels);
    ``"low"`` one thin vessel (about 1%). ``vessel_width`` is the (thinnest, thickest)
    vessel diameter in pixels. ``contrast`` scales how much brighter vessels are than the
    background (1.0: clearly visible; lower values make faint vessels that are harder to learn).
    """
    _check_common(n, size)
    if foreground not in FOREGROUND_LEVELS:
        raise ValueError(f"foreground must be one of {FOREGROUND_LEVELS}, got {foreground!r}")
    w_min, w_max = (float(v) for v in vessel_width)
    if not 0.5 <= w_min <= w_max:
        raise ValueError(
            f"vessel_width must be (thinnest, thickest) with 0.5 <= thinnest <= thickest, got {vessel_width!r}"
        )
    if not 0.0 < contrast <= 2.0:
        raise ValueError(f"contrast must be in (0, 2], got {contrast!r}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for begin in range(0, n, _CHUNK):
        count = min(_CHUNK, n - begin)
        index, xy, radius = _vessel_points(rng, count, size, foreground == "low", (w_min, w_max))
        binary = _stamp_discs(count, size, index, xy, radius)
        images[begin : begin + count] = _render_vessel_images(rng, binary, contrast)
        if soft_masks:
            # Anti-aliased edges: many grey levels, and > 127 exactly where the binary mask is set.
            coverage = _stamp_discs(count, size, index, xy, radius, soft=True)
            masks[begin : begin + count] = np.clip(np.rint(coverage * 255.0), 0, 255).astype(np.uint8)
        else:
            masks[begin : begin + count] = binary.astype(np.uint8) * 255
    return images, masks


def _gaussians(centres: np.ndarray, sigmas: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Max over Gaussian blobs: centres (n, k, 2), sigmas (n, k, 2), valid (n, k) -> (n, size, size)."""
    grid = np.arange(size, dtype=np.float32)
    gx = np.exp(-0.5 * ((grid[None, None, :] - centres[..., 0:1]) / sigmas[..., 0:1]) ** 2)  # (n, k, x)
    gy = np.exp(-0.5 * ((grid[None, None, :] - centres[..., 1:2]) / sigmas[..., 1:2]) ** 2)  # (n, k, y)
    gx = (gx * valid[..., None]).astype(np.float32)
    out = np.zeros((centres.shape[0], size, size), dtype=np.float32)
    for j in range(centres.shape[1]):
        np.maximum(out, gy[:, j, :, None] * gx[:, j, None, :], out=out)
    return out


def synthetic_heatmaps(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` text-like images with CRAFT-style region and affinity heatmaps, seeded.

    Each image holds one to three words of three to six blocky glyphs on a textured
    background. ``region`` (n, size, size) float32 in [0, 1] has a Gaussian blob per
    character; ``affinity`` a blob between each pair of neighbouring characters of a word.
    """
    _check_common(n, size)
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    region = np.empty((n, size, size), dtype=np.float32)
    affinity = np.empty((n, size, size), dtype=np.float32)
    for begin in range(0, n, _CHUNK):
        end = min(n, begin + _CHUNK)
        images[begin:end], region[begin:end], affinity[begin:end] = _text_chunk(rng, end - begin, size)
    return images, region, affinity


def _text_chunk(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One vectorised batch of :func:`synthetic_heatmaps`."""
    words, letters = 3, 6
    k = words * letters
    char_h = rng.uniform(0.14, 0.2, size=(n, words)) * size
    char_w = char_h * rng.uniform(0.6, 0.9, size=(n, words))
    n_words = rng.integers(1, words + 1, size=n)
    n_letters = rng.integers(3, letters + 1, size=(n, words))
    # Words sit on separate text lines, left-aligned at a random indent.
    line_y = (np.arange(words)[None, :] + 0.5) / words * size + rng.uniform(
        -0.05, 0.05, size=(n, words)
    ) * size
    x0 = rng.uniform(0.02, 0.3, size=(n, words)) * size
    gap = char_w * rng.uniform(1.05, 1.25, size=(n, words))
    slot = np.arange(letters)[None, None, :]
    cx = x0[..., None] + char_w[..., None] / 2 + slot * gap[..., None]  # (n, words, letters)
    cy = np.broadcast_to(line_y[..., None], cx.shape)
    valid = (np.arange(words)[None, :, None] < n_words[:, None, None]) & (slot < n_letters[..., None])
    valid &= cx + char_w[..., None] / 2 < size
    centres = np.stack([cx, cy], axis=-1).reshape(n, k, 2).astype(np.float32)
    half = (
        np.stack(
            [np.broadcast_to(char_w[..., None], cx.shape), np.broadcast_to(char_h[..., None], cx.shape)], -1
        )
        / 2
    )
    half = half.reshape(n, k, 2).astype(np.float32)
    valid_flat = valid.reshape(n, k)
    region = _gaussians(centres, half / 2.0, valid_flat.astype(np.float32), size)
    # Affinity: between characters j and j+1 of the same word, both present.
    pair_valid = (valid[..., :-1] & valid[..., 1:]).reshape(n, -1)
    mid = ((np.stack([cx, cy], -1)[:, :, :-1] + np.stack([cx, cy], -1)[:, :, 1:]) / 2).reshape(n, -1, 2)
    pair_half = np.stack(
        [
            np.broadcast_to(char_w[..., None], cx[..., :-1].shape) / 2,
            np.broadcast_to(char_h[..., None], cx[..., :-1].shape) / 2,
        ],
        -1,
    ).reshape(n, -1, 2)
    affinity = _gaussians(
        mid.astype(np.float32), (pair_half / 2.5).astype(np.float32), pair_valid.astype(np.float32), size
    )

    # Glyphs: each character is a random 3x3 pattern of ink cells inside its box.
    pattern = rng.random((n, k, 3, 3)) < 0.55
    pattern[..., 1, 1] |= ~pattern.any(axis=(2, 3))
    grid = np.arange(size, dtype=np.float32)
    u = (grid[None, None, :] - (centres[..., 0:1] - half[..., 0:1])) / (2 * half[..., 0:1])  # (n, k, x)
    v = (grid[None, None, :] - (centres[..., 1:2] - half[..., 1:2])) / (2 * half[..., 1:2])  # (n, k, y)
    cells = np.arange(3, dtype=np.float32)[None, None, :, None]
    # One-hot cell membership of every column (x) and row (y), zero outside the glyph's box:
    # ink[y, x] = sum over glyphs and cells of row[cell_r, y] * pattern[cell_r, cell_c] * col[cell_c, x].
    col = ((np.floor(u * 3)[:, :, None, :] == cells) & valid_flat[:, :, None, None]).astype(np.float32)
    row = (np.floor(v * 3)[:, :, None, :] == cells).astype(np.float32)
    rows_inked = np.einsum("nkry,nkrc->nykc", row, pattern.astype(np.float32)).reshape(n, size, k * 3)
    ink = (rows_inked @ col.reshape(n, k * 3, size)) > 0
    paper = rng.uniform(150, 240, size=(n, 1, 1, 3))
    ink_colour = rng.uniform(0, 90, size=(n, 1, 1, 3))
    texture = rng.standard_normal(size=(n, size, size, 1), dtype=np.float32) * 12.0
    image = np.where(ink[..., None], ink_colour, paper) + texture
    return np.clip(image, 0, 255).astype(np.uint8), region, affinity


def write_synthetic_folder(
    path: str | Path,
    n: int,
    size: int = 64,
    seed: int = 0,
    soft_masks: bool = False,
    foreground: str = "normal",
    image_format: str = "png",
) -> Path:
    """Save ``n`` synthetic vessel pairs as ``images/NNNN.<fmt>`` and ``masks/NNNN.png`` under ``path``.

    A real folder data set for tests and ``diagnose-dataset`` demos; masks are always PNG
    (lossless, so a soft mask keeps its grey levels and a binary one stays binary).
    """
    from PIL import Image

    if image_format not in ("png", "jpg", "tif"):
        raise ValueError(f"image_format must be png, jpg or tif, got {image_format!r}")
    root = Path(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    images, masks = synthetic_vessels(n, size=size, seed=seed, soft_masks=soft_masks, foreground=foreground)
    digits = max(4, len(str(n - 1)))
    for i in range(n):
        stem = f"{i:0{digits}d}"
        Image.fromarray(images[i]).save(root / "images" / f"{stem}.{image_format}")
        Image.fromarray(masks[i]).save(root / "masks" / f"{stem}.png")
    return root
