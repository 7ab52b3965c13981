"""Data for training: the train/val/test splits of a dataset root, seeded subsets, and loaders.

Seeding: ``seed_all`` seeds Python, NumPy and torch; each loader shuffles with its own generator
seeded from ``seed + epoch`` and re-seeds its workers from torch's seed, so an epoch's order and its
augmentations depend only on the seed and the epoch (what resuming relies on).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from training import distributed
from training.config import ConfigError, TrainConfig
from training.datasets import EmotionDataset

log = logging.getLogger(__name__)


class DatasetView(Dataset):
    """Some samples of an ``EmotionDataset`` with a transform of their own.

    Args:
        base: the dataset the samples come from.
        indices: which of its samples, in order.
        transform: applied to each PIL image (None: the image itself).
    """

    def __init__(self, base: EmotionDataset, indices: Sequence[int], transform: Callable[[Any], Any] | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        j = self.indices[i]
        image = self.base.load_image(j)
        return (self.transform(image) if self.transform else image), self.base.samples[j].label

    @property
    def targets(self) -> list[int]:
        return [self.base.samples[j].label for j in self.indices]


def stratified_indices(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """``count`` indices taken round-robin over classes from seeded per-class shuffles (sorted)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_class.items())]
    out: list[int] = []
    while len(out) < min(count, len(labels)):
        for q in queues:
            if q and len(out) < count:
                out.append(int(q.pop()))
    return sorted(out)


def load_splits(config: TrainConfig, mean: Sequence[float], std: Sequence[float]
                ) -> tuple[DatasetView, DatasetView, DatasetView]:
    """The (train, validation, test) views of ``config.data_root``.

    Validation is the dataset's own val split where it has one, else a stratified, seeded holdout of
    the train split (``config.val_split``, ``config.val_fraction``); the limits take stratified subsets.

    Raises:
        ConfigError: no data root.
        DatasetError: the root cannot be read.
    """
    from training.datasets import create_dataset, detect_layout
    from training.transforms import EvalTransform, TrainTransform

    if not config.data_root:
        raise ConfigError("no data root: give --data PATH (or data_root in the config)",
                          hint="`emobench data sample --out data` writes a small sample dataset to try")
    root = Path(config.data_root)
    kind = detect_layout(root) if config.dataset_kind == "auto" else config.dataset_kind
    train_tf = (TrainTransform(image_size=config.image_size, mean=mean, std=std) if config.augment
                else EvalTransform(image_size=config.image_size, mean=mean, std=std))
    eval_tf = EvalTransform(image_size=config.image_size, mean=mean, std=std)

    def open_split(split: str, *, allow_empty_classes: bool = True) -> EmotionDataset:
        return create_dataset(root, kind=kind, split=split, class_names=config.classes,
                              allow_empty_classes=allow_empty_classes, skip_bad=config.skip_bad,
                              verify_images=config.skip_bad)

    train_ds = open_split("train", allow_empty_classes=False)
    train_idx = list(range(len(train_ds)))
    val_split = config.val_split
    if val_split == "auto":
        if kind == "fer2013_csv":
            val_split = "val"
        elif kind in ("fer2013_folder", "rafdb_folder"):
            probe = open_split("val")
            val_split = "val" if probe.split == "val" else "holdout"
        else:
            val_split = "holdout"
    if val_split == "holdout":
        held = set(stratified_indices(train_ds.targets,
                                      max(len(config.classes), round(config.val_fraction * len(train_ds))),
                                      config.seed + 1))
        val_ds, val_idx = train_ds, sorted(held)
        train_idx = [i for i in train_idx if i not in held]
        log.info("validation: %d images held out of %s's train split (%.0f%%, stratified)", len(val_idx), root,
                 100 * config.val_fraction)
    else:
        val_ds = open_split(val_split)
        val_idx = list(range(len(val_ds)))
    test_ds = open_split(config.test_split)
    test_idx = list(range(len(test_ds)))
    if config.limit_train_images:
        train_idx = [train_idx[i] for i in stratified_indices([train_ds.samples[j].label for j in train_idx],
                                                              config.limit_train_images, config.seed)]
    if config.limit_eval_images:
        val_idx = [val_idx[i] for i in stratified_indices([val_ds.samples[j].label for j in val_idx],
                                                          config.limit_eval_images, config.seed)]
        test_idx = [test_idx[i] for i in stratified_indices([test_ds.samples[j].label for j in test_idx],
                                                            config.limit_eval_images, config.seed)]
    return (DatasetView(train_ds, train_idx, train_tf), DatasetView(val_ds, val_idx, eval_tf),
            DatasetView(test_ds, test_idx, eval_tf))


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a loader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, dist: distributed.DistInfo, seed: int,
                epoch: int, workers: int, pin_memory: bool, drop_last: bool = False) -> DataLoader:
    """A loader over this rank's shard of ``dataset`` for one epoch (the order depends on seed and epoch only)."""
    # A DistributedSampler even in one process: the shuffle order then equals DDP's union of shards.
    sampler: DistributedSampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                                                     shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed + epoch), persistent_workers=False)
