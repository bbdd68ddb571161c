"""A run's data: the configured source split into train/val, batched in a resumable order.

Builds the run's data sets (:mod:`.data`, :mod:`.synthetic`) from a
:class:`TrainConfig` and adds what the loop needs around them: a shuffle order that is a
function of (seed, epoch), so a resumed run skips exactly the batches it already trained
on; ``pos_weight auto``; one fixed validation sample for previews; and the dataset report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from octa_tui.protocol.messages import DatasetReport

from .config import TrainConfig
from .data import ArrayDataset, DataError, FolderDataset, split_train_val, training_targets, unnormalized
from .synthetic import synthetic_heatmaps, synthetic_vessels
from .targets import compute_pos_weight


def shuffled_batches(n: int, batch_size: int, epoch: int, seed: int, skip: int = 0) -> list[list[int]]:
    """The epoch's batches of indices into ``range(n)``: shuffled by (seed, epoch), first ``skip`` left out.

    A last batch shorter than ``batch_size`` is dropped unless it is the only one
    (BatchNorm needs more than one sample, and a tiny last batch makes a noisy step).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    count = max(n // batch_size, 1 if n else 0)
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(skip, count)]


@dataclass
class RunData:
    """Train and validation sets of one run, and how to batch them."""

    source: str
    train: Dataset
    val: Dataset
    pin_memory: bool = False
    report: Callable[[str], DatasetReport] | None = None  # run id -> the dataset report
    rank: int = 0  # under torchrun: this process's share of each epoch (a DistributedSampler)
    world_size: int = 1
    _pos_weight: float | None = field(default=None, repr=False)

    @property
    def train_size(self) -> int:
        return len(self.train)  # type: ignore[arg-type]

    @property
    def val_size(self) -> int:
        return len(self.val)  # type: ignore[arg-type]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch at ``batch_size`` (per rank: every rank runs as many)."""
        share = -(-self.train_size // self.world_size)  # DistributedSampler pads to equal shares
        return max(share // batch_size, 1 if self.train_size else 0)

    @property
    def pos_weight(self) -> float:
        """Background / foreground pixels of the training masks (``--pos-weight auto``)."""
        if self._pos_weight is None:
            try:
                self._pos_weight = compute_pos_weight(training_targets(self.train))
            except ValueError as exc:
                raise DataError(f"--pos-weight auto: {exc}") from exc
        return self._pos_weight

    def train_batches(self, batch_size: int, epoch: int, seed: int, skip: int = 0) -> Iterator[Any]:
        """(images, targets) batches of ``epoch`` in its shuffled order, after ``skip`` batches.

        Under torchrun each rank takes its share of the epoch from a ``DistributedSampler``
        (shuffled by seed, ``set_epoch`` each epoch), so a resumed run still skips exactly.
        """
        if self.world_size > 1:
            batches = self._rank_batches(batch_size, epoch, seed, skip)
        else:
            batches = shuffled_batches(self.train_size, batch_size, epoch, seed, skip)
        return iter(DataLoader(self.train, batch_sampler=batches, pin_memory=self.pin_memory))

    def _rank_batches(self, batch_size: int, epoch: int, seed: int, skip: int) -> list[list[int]]:
        sampler = DistributedSampler(self.train, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
        order = list(sampler)
        count = self.steps_per_epoch(batch_size)
        return [order[b * batch_size : (b + 1) * batch_size] for b in range(skip, count)]

    def val_batches(self, batch_size: int) -> Iterator[Any]:
        """(images, targets) batches of the validation set, in order, the last one kept."""
        return iter(DataLoader(self.val, batch_size=batch_size, shuffle=False, pin_memory=self.pin_memory))

    def preview_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one validation image (and target) that previews show, the same all run long."""
        image, target = (self.val if self.val_size else self.train)[0]
        return image, target


def load_data(config: TrainConfig, pin_memory: bool = False) -> RunData:
    """The data set ``config`` names, split into train and validation with the config's seed."""
    if config.task == "heatmap":
        images, region, affinity = synthetic_heatmaps(config.synthetic, size=config.image_size, seed=config.seed)
        dataset: ArrayDataset = ArrayDataset(images, np.stack([region, affinity], axis=1), normalize=config.normalize)
        source = f"synthetic heatmaps x{config.synthetic}"
    elif config.data_dir is not None:
        dataset = FolderDataset(config.data_dir, size=config.image_size, normalize=config.normalize,
                                skip_bad=config.skip_bad, binarize=config.binarize_masks)
        source = str(config.data_dir)
    else:
        foreground = "low" if config.low_foreground else "normal"
        images, masks = synthetic_vessels(config.synthetic, size=config.image_size, seed=config.seed,
                                          soft_masks=config.soft_masks, foreground=foreground,
                                          contrast=config.contrast)
        dataset = ArrayDataset(images, masks, normalize=config.normalize, binarize=config.binarize_masks)
        source = f"synthetic vessels x{config.synthetic}" + (" (soft masks)" if config.soft_masks else "") + (
            " (low foreground)" if config.low_foreground else "") + (
            f" (contrast {config.contrast:g})" if config.contrast != 1.0 else "") + (
            " (binarized)" if config.binarize_masks else "")
    train, val = split_train_val(dataset, config.val_fraction, config.seed)
    if not config.val_normalize:  # the val-collapse fault: a scaling applied in the training pipeline only
        val = Subset(unnormalized(dataset), val.indices)
        source += " (validation not normalised)"
    data = RunData(source=source, train=train, val=val, pin_memory=pin_memory)
    data.report = _report_builder(dataset, data, binarized=config.binarize_masks)
    return data


def _report_builder(dataset: ArrayDataset, data: RunData, binarized: bool = False) -> Callable[[str], DatasetReport]:
    """The dataset report of the whole data set: the masks as stored, or, when the run binarises
    them (``--binarize-masks``), the masks the model trains on."""
    from .dataset_report import report_from_arrays

    def build(run_id: str) -> DatasetReport:
        return report_from_arrays(
            dataset.images,
            dataset.targets if binarized else getattr(dataset, "raw_masks", dataset.targets),
            source=data.source,
            run_id=run_id,
            problems=getattr(dataset, "problems", ()),
            train_images=data.train_size,
            val_images=data.val_size,
        )

    return build
