"""Torch data sets for training: a folder of images and masks, or arrays (the synthetic generators).

Both hold the data in memory as uint8 (decoded, checked and resized once, at construction, so
a bad file fails before the first step, naming the file) and hand out float tensors:
``image`` (channels, h, w) scaled to [0, 1] - or raw 0-255 with ``normalize=False``, the
unnormalised inputs of the exploding-gradient scenario - and ``target`` (c, h, w) in [0, 1].
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .folder import DataError, DataPathError, load_folder, split_indices
from .targets import compute_pos_weight, foreground_ratios, target_stats

__all__ = [
    "ArrayDataset",
    "DataError",
    "DataPathError",
    "FolderDataset",
    "compute_pos_weight",
    "foreground_ratios",
    "split_train_val",
    "target_stats",
    "training_targets",
    "unnormalized",
]


def _binarized(masks: np.ndarray) -> np.ndarray:
    """The seed's fix for soft masks: > 127 becomes 255, the rest 0."""
    return (masks > 127).astype(np.uint8) * 255


class ArrayDataset(Dataset):
    """Images and targets held as arrays: what the synthetic generators return.

    ``images``: uint8 (n, h, w, 3) or (n, h, w) (grey, repeated to 3 channels).
    ``targets``: uint8 masks (n, h, w) with 255 = foreground (scaled to [0, 1]), or float
    targets in [0, 1] of shape (n, h, w) or (n, c, h, w) (heatmaps: region, affinity).
    ``binarize`` thresholds uint8 masks at 127 first.
    """

    def __init__(
        self, images: np.ndarray, targets: np.ndarray, normalize: bool = True, binarize: bool = False
    ) -> None:
        images = np.asarray(images)
        targets = np.asarray(targets)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.ndim != 4:
            raise DataError(f"images must be (n, h, w, channels) or (n, h, w), got shape {images.shape}")
        if targets.ndim == 3:
            targets = targets[:, None]
        if targets.ndim != 4:
            raise DataError(f"targets must be (n, h, w) or (n, c, h, w), got shape {targets.shape}")
        if images.shape[0] != targets.shape[0] or images.shape[1:3] != targets.shape[2:4]:
            raise DataError(
                f"images {images.shape} and targets {targets.shape} disagree on the number of items or their size"
            )
        if binarize:
            if targets.dtype != np.uint8:
                raise DataError("binarize applies to uint8 masks (0-255); float targets are used as they are")
            targets = _binarized(targets)
        self.images = np.ascontiguousarray(images)
        self.targets = np.ascontiguousarray(targets)
        self.normalize = normalize

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float()
        if self.normalize:
            image = image / 255.0
        target = torch.from_numpy(self.targets[index]).float()
        if self.targets.dtype == np.uint8:
            target = target / 255.0
        return image, target


class FolderDataset(ArrayDataset):
    """A folder with ``images/`` and ``masks/`` paired by file stem, decoded and resized in memory.

    PNG, JPG and TIF files, grey or RGB (16-bit and float files are scaled to 8 bits);
    images are resized bilinearly and masks by nearest neighbour to ``size`` x ``size``.
    Unreadable files, images without masks (and masks without images) and image/mask size
    mismatches raise one :class:`DataError` naming every file and its problem; with
    ``skip_bad=True`` those files are left out and listed in ``problems`` (marked skipped),
    ready for the dataset report.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = 64,
        binarize: bool = False,
        normalize: bool = True,
        skip_bad: bool = False,
        channels: int = 3,
    ) -> None:
        loaded = load_folder(root, size=size, channels=channels, skip_bad=skip_bad)
        images = loaded.images if channels == 3 else loaded.images[..., None]
        self.root = Path(root)
        self.size = size
        self.stems = loaded.stems
        self.problems = loaded.problems
        self.raw_masks = loaded.masks  # before binarisation: what the dataset report should check
        super().__init__(images, loaded.masks, normalize=normalize, binarize=binarize)


def unnormalized(dataset: ArrayDataset) -> ArrayDataset:
    """The same images and targets (shared, not copied) handed out as raw 0-255 pixel values.

    A validation pipeline that forgets the scaling training applies is a bug users hit; the
    val-collapse scenario reproduces it with this view of the validation images.
    """
    view = copy.copy(dataset)
    view.normalize = False
    return view


def split_train_val(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Subset, Subset]:
    """Seeded train/validation subsets of a data set (the same seed gives the same split)."""
    train, val = split_indices(len(dataset), val_fraction, seed)
    return Subset(dataset, train.tolist()), Subset(dataset, val.tolist())


def training_targets(dataset: Dataset) -> np.ndarray:
    """The stored targets of an ArrayDataset/FolderDataset or a Subset of one (for pos_weight auto)."""
    if isinstance(dataset, Subset):
        return training_targets(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, ArrayDataset):
        return dataset.targets
    raise TypeError(
        f"cannot read targets from {type(dataset).__name__}; pass an ArrayDataset, FolderDataset or Subset"
    )
