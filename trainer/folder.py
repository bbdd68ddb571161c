"""Reading an image/mask folder data set, without torch: pairing, decoding, checking, resizing.

A data set is a folder with ``images/`` and ``masks/``; an image and a mask belong together
when their file names share a stem (``images/0003.jpg`` + ``masks/0003.png``). Both the
training data set (``data.py``) and the torch-free ``diagnose-dataset`` report use this
module, so they agree on what counts as a problem. Every problem names the file, relative to
the data set folder, and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..protocol.messages import FileProblem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SKIPPED = " (skipped)"


class DataError(Exception):
    """A data set that cannot be used as it is; the message names each file and the problem."""

    def __init__(self, message: str, problems: tuple[FileProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class DataPathError(DataError):
    """The data set path itself is wrong: missing, not a folder, or without images/ and masks/."""


@dataclass(frozen=True)
class Pair:
    """An image file and the mask file with the same stem."""

    stem: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class LoadedFolder:
    """A folder data set decoded into memory at one size, with the problems found on the way."""

    images: np.ndarray  # uint8 (n, size, size, channels) - channels 3 - or (n, size, size) for channels 1
    masks: np.ndarray  # uint8 (n, size, size)
    stems: tuple[str, ...]
    problems: tuple[FileProblem, ...]


def _listing(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def check_dataset_path(root: str | Path) -> Path:
    """The data set folder as a Path, or DataPathError saying what is missing and what is expected."""
    root = Path(root)
    if not root.exists():
        raise DataPathError(f"{root}: no such folder (expected a folder with images/ and masks/ inside)")
    if not root.is_dir():
        raise DataPathError(f"{root}: not a folder (expected a folder with images/ and masks/ inside)")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DataPathError(f"{root}: no {sub}/ folder (expected {root / 'images'} and {root / 'masks'})")
    return root


def find_pairs(root: str | Path) -> tuple[list[Pair], list[FileProblem]]:
    """Pair ``images/`` and ``masks/`` files by stem; unpaired and ambiguous files become problems."""
    root = check_dataset_path(root)
    images, masks = _listing(root / "images"), _listing(root / "masks")
    pairs: list[Pair] = []
    problems: list[FileProblem] = []
    for stem, paths in images.items():
        rel = _relative(paths[0], root)
        if len(paths) > 1:
            others = ", ".join(_relative(p, root) for p in paths[1:])
            problems.append(
                FileProblem(rel, f"several images share the stem {stem!r} (also {others}); keep one")
            )
            continue
        if stem not in masks:
            problems.append(FileProblem(rel, f"no mask: expected masks/{stem}.png (or .jpg/.tif)"))
            continue
        if len(masks[stem]) > 1:
            names = ", ".join(_relative(p, root) for p in masks[stem])
            problems.append(FileProblem(rel, f"several masks share its stem ({names}); keep one"))
            continue
        pairs.append(Pair(stem, paths[0], masks[stem][0]))
    for stem, paths in masks.items():
        if stem not in images:
            for path in paths:
                problems.append(
                    FileProblem(_relative(path, root), f"mask without an image: expected images/{stem}.*")
                )
    if not images and not masks:
        problems.append(FileProblem("images/", "no image files (.png, .jpg, .tif) found"))
    return pairs, problems


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """8-bit version of a decoded array: 16-bit and float images are scaled, not clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    data = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if np.nanmax(data, initial=0.0) <= 1.0 else 255.0
    else:
        top = 255.0 if np.max(data, initial=0) <= 255 else 65535.0
    return np.clip(np.rint(np.nan_to_num(data) * (255.0 / top)), 0, 255).astype(np.uint8)


def _decode(path: Path, root: Path, what: str) -> Image.Image:
    """Open and fully decode a file (a truncated one fails here, not mid-training)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        rel = _relative(path, root)
        reason = f"unreadable {what} ({exc})"
        raise DataError(f"{rel}: {reason}", (FileProblem(rel, reason),)) from None


def _image_array(img: Image.Image, channels: int) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F", "1"):
        grey = _to_uint8(np.asarray(img))
        img = Image.fromarray(grey)
    img = img.convert("RGB" if channels == 3 else "L")
    return np.asarray(img, dtype=np.uint8)


def _mask_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F", "1"):
        return _to_uint8(np.asarray(img))
    return np.asarray(img.convert("L"), dtype=np.uint8)


def read_pair(pair: Pair, root: str | Path, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair at its native size: image uint8 (h, w, 3) or (h, w), mask uint8 (h, w).

    Raises DataError naming the file when it cannot be decoded or when image and mask
    differ in size.
    """
    root = Path(root)
    image_img = _decode(pair.image, root, "image")
    mask_img = _decode(pair.mask, root, "mask")
    if image_img.size != mask_img.size:
        (iw, ih), (mw, mh) = image_img.size, mask_img.size
        raise DataError(
            f"{_relative(pair.image, root)}: image is {iw}x{ih} but its mask {_relative(pair.mask, root)} "
            f"is {mw}x{mh}; they must match",
            (FileProblem(_relative(pair.image, root), f"image is {iw}x{ih} but its mask is {mw}x{mh}"),),
        )
    return _image_array(image_img, channels), _mask_array(mask_img)


def iter_pairs(
    root: str | Path, channels: int = 3
) -> Iterator[tuple[Pair, np.ndarray, np.ndarray] | FileProblem]:
    """Every pair decoded at native size, or a FileProblem in its place; pairing problems first."""
    root = check_dataset_path(root)
    pairs, problems = find_pairs(root)
    yield from problems
    for pair in pairs:
        try:
            image, mask = read_pair(pair, root, channels)
        except DataError as exc:
            yield from exc.problems
            continue
        yield pair, image, mask


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` x ``size``: bilinear for the image, nearest for the mask (keeps its values)."""
    if image.shape[:2] == (size, size):
        return image, mask
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    resized_mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
    return resized, resized_mask


def load_folder(root: str | Path, size: int, channels: int = 3, skip_bad: bool = False) -> LoadedFolder:
    """Decode, check and resize every pair of a folder data set.

    Without ``skip_bad`` any problem raises one DataError listing every problem found (file
    and reason); with it, bad files are left out and reported as problems marked skipped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer of at least 8 pixels, got {size!r}")
    root = check_dataset_path(root)
    images, masks, stems, problems = [], [], [], []
    for item in iter_pairs(root, channels):
        if isinstance(item, FileProblem):
            problems.append(item)
            continue
        pair, image, mask = item
        image, mask = resize_pair(image, mask, size)
        images.append(image)
        masks.append(mask)
        stems.append(pair.stem)
    if problems and not skip_bad:
        listing = "; ".join(f"{p.file}: {p.problem}" for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(
            f"{len(problems)} problem(s) in {root}: {listing}{more}. Fix or remove these files, "
            "or leave them out: octa-train --skip-bad-files (in Python: skip_bad=True)",
            tuple(problems),
        )
    if not images:
        raise DataError(f"{root}: no usable image/mask pairs", tuple(problems))
    return LoadedFolder(
        images=np.stack(images),
        masks=np.stack(masks),
        stems=tuple(stems),
        problems=tuple(FileProblem(p.file, p.problem + SKIPPED) for p in problems),
    )


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split of ``n`` items: (train indices, val indices), each sorted.

    At least one item goes each way when ``n >= 2`` and ``0 < val_fraction < 1``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
