"""Preprocess the plan's images ONCE on the host into the artifacts' input tensor.

Every image of every experiment goes through ``training.transforms.EvalTransform`` with the size
and normalisation recorded in the manifest, and each experiment's batch is written as one raw
float32 file (little-endian, C order, NCHW: exactly what ``executor_runner --inputs`` reads). Host
runtimes read the same bytes back, so every target sees identical input and any difference in
output is the runtime's. Per-image files (for artifacts exported at batch 1) are slices of the same
bytes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from android_bench.plan import AblationPlan, PlanError
from emobench_common.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class PreparedInputs:
    """The input files of a run: one ``exp_NNN.f32`` per experiment, with their sha256."""

    folder: Path
    shape: tuple[int, int, int, int]
    files: Mapping[int, Path]
    sha256: Mapping[int, str]
    _image_files: dict = field(default_factory=dict, compare=False, repr=False)

    def tensor(self, index: int) -> np.ndarray:
        """Experiment ``index``'s batch as a float32 NCHW array (read back from its file)."""
        data = np.fromfile(self.files[index], dtype=DTYPE)
        return data.reshape(self.shape).astype(np.float32, copy=False)

    def image_file(self, index: int, position: int) -> Path:
        """A file holding only image ``position`` of experiment ``index`` (for batch-1 artifacts)."""
        key = (index, position)
        if key not in self._image_files:
            per_image = int(np.prod(self.shape[1:])) * DTYPE.itemsize
            with open(self.files[index], "rb") as fh:
                fh.seek(position * per_image)
                chunk = fh.read(per_image)
            path = self.folder / f"exp_{index:03d}_img_{position:02d}.f32"
            if not path.is_file() or path.read_bytes() != chunk:
                atomic_write_bytes(path, chunk)
            self._image_files[key] = path
        return self._image_files[key]

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


def preprocess_images(plan: AblationPlan) -> dict[int, np.ndarray]:
    """Every experiment's batch as float32 NCHW, each distinct image transformed once.

    Raises:
        PlanError: a dataset no longer holds an image of the plan, or its label changed.
    """
    from training.datasets import DatasetError, create_dataset
    from training.transforms import create_eval_transform

    contract = plan.input_spec
    c, h, w = contract.input_shape
    transform = create_eval_transform(contract)
    batches: dict[int, np.ndarray] = {}
    for spec in plan.datasets:
        try:
            ds = create_dataset(spec.root, kind=spec.kind, split=spec.split, class_names=contract.class_names,
                                allow_empty_classes=True, faces=spec.faces)
        except DatasetError as exc:
            raise PlanError(f"{spec.role} dataset of the plan: {exc.message}", hint=exc.hint) from exc
        index_of = {s.image_id: i for i, s in enumerate(ds.samples)}
        cache: dict[str, np.ndarray] = {}
        for exp in plan.experiments:
            if exp.role != spec.role:
                continue
            rows = []
            for image_id, label in zip(exp.image_ids, exp.labels, strict=True):
                if image_id not in index_of:
                    raise PlanError(f"{spec.root}: image {image_id!r} of experiment {exp.index} is no longer in the "
                                    "dataset", hint="restore the dataset or start a new run")
                i = index_of[image_id]
                if ds.samples[i].label != label:
                    raise PlanError(f"{spec.root}: image {image_id!r} is now labelled "
                                    f"{contract.class_names[ds.samples[i].label]}, the plan has {contract.class_names[label]}")
                if image_id not in cache:
                    try:
                        cache[image_id] = transform(ds.load_image(i)).numpy().astype(np.float32)
                    except DatasetError as exc:
                        raise PlanError(f"experiment {exp.index}: {exc.message}", hint=exc.hint) from exc
                rows.append(cache[image_id])
            batch = np.stack(rows)
            if batch.shape[1:] != (c, h, w):
                raise PlanError(f"preprocessed images have shape {batch.shape[1:]}, the manifest says {(c, h, w)}")
            batches[exp.index] = np.ascontiguousarray(batch, dtype=DTYPE)
    return batches


def prepare_inputs(plan: AblationPlan, folder: Path) -> PreparedInputs:
    """Write each experiment's input file into ``folder`` (atomically; unchanged files are kept).

    Returns:
        The files and their sha256 (of the exact bytes every target receives).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    batches = preprocess_images(plan)
    files: dict[int, Path] = {}
    hashes: dict[int, str] = {}
    for index, batch in sorted(batches.items()):
        data = batch.tobytes(order="C")
        digest = hashlib.sha256(data).hexdigest()
        path = folder / f"exp_{index:03d}.f32"
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            atomic_write_bytes(path, data)
        files[index], hashes[index] = path, digest
    shape = plan.input_spec.batch_shape(plan.batch_size)
    log.info("prepared %d input files (%s) in %s", len(files), "x".join(map(str, shape)), folder)
    return PreparedInputs(folder=folder, shape=shape, files=files, sha256=hashes)
