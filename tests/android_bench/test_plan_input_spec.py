"""The input contract travels checkpoint -> manifest -> plan -> inputs; an older manifest without it is
read with exactly the defaults every consumer used before (crop_pct 1.0, bilinear, 0..1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from android_bench.inputs import preprocess_images
from android_bench.plan import AblationPlan, PlanConfig, build_plan, read_manifest
from emobench_common.input_spec import InputSpec
from export.manifest import load_manifest
from tests.device_results.tiny_export import EXPORT_BATCH, IMAGE_SIZE, build_tiny_export
from training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


@pytest.fixture(scope="module")
def old_manifest(manifest, tmp_path_factory) -> Path:
    """The same export, its manifest rewritten the way export wrote it before the contract."""
    folder = tmp_path_factory.mktemp("old_export") / "export"
    shutil.copytree(manifest.parent, folder)
    data = json.loads((folder / "manifest.json").read_text())
    entry = data["input"]
    del entry["crop_pct"], entry["interpolation"]
    entry["value_range"] = "RGB scaled to 0..1, then (x - mean) / std per channel"
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))
    return folder / "manifest.json"


def _plan(manifest: Path, sample) -> AblationPlan:
    return build_plan(PlanConfig(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"], experiments=4,
                                 batch_size=EXPORT_BATCH, warmup=0, repeats=1, seed=1))


def test_manifest_carries_the_checkpoints_contract(manifest):
    raw = json.loads(manifest.read_text())
    spec = load_checkpoint(raw["checkpoint"]["path"]).input_spec
    assert raw["input"] == spec.to_manifest_input(EXPORT_BATCH)
    assert raw["input"]["crop_pct"] == 1.0 and raw["input"]["interpolation"] == "bilinear"
    assert raw["input"]["value_range"] == [0.0, 1.0] and raw["class_names"] == list(spec.class_names)
    assert load_manifest(manifest).input_spec == spec == read_manifest(manifest).input_spec


def test_older_manifest_reads_with_the_same_defaults_and_preprocessing(manifest, old_manifest, tiny_sample):
    new_spec, old_spec = read_manifest(manifest).input_spec, read_manifest(old_manifest).input_spec
    assert old_spec == new_spec
    assert (old_spec.crop_pct, old_spec.interpolation, old_spec.value_range) == (1.0, "bilinear", (0.0, 1.0))
    new_plan, old_plan = _plan(manifest, tiny_sample), _plan(old_manifest, tiny_sample)
    assert old_plan.input_spec == new_plan.input_spec and old_plan.experiments == new_plan.experiments
    new_batches, old_batches = preprocess_images(new_plan), preprocess_images(old_plan)
    assert new_batches.keys() == old_batches.keys()
    for index, batch in new_batches.items():
        assert batch.shape == (EXPORT_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
        assert np.array_equal(batch, old_batches[index])  # byte for byte the same inputs


def test_before_the_contract_preprocessing_is_unchanged(manifest, tiny_sample):
    """The inputs equal what the code before the contract computed: EvalTransform(size, mean, std, crop_pct=1.0)."""
    from training.datasets import create_dataset
    from training.transforms import EvalTransform

    plan = _plan(manifest, tiny_sample)
    spec = plan.input_spec
    before = EvalTransform(image_size=IMAGE_SIZE, mean=spec.mean, std=spec.std, crop_pct=1.0)
    exp = plan.experiments[0]
    ds = create_dataset(plan.dataset(exp.role).root, split=plan.dataset(exp.role).split,
                        class_names=spec.class_names, allow_empty_classes=True)
    index_of = {s.image_id: i for i, s in enumerate(ds.samples)}
    expected = np.stack([before(ds.load_image(index_of[i])).numpy() for i in exp.image_ids])
    assert np.array_equal(preprocess_images(plan)[exp.index], expected)


def test_plan_stored_before_the_contract_resumes_with_the_same_fingerprint(manifest, tiny_sample):
    plan = _plan(manifest, tiny_sample)
    stored = plan.to_dict()
    assert stored["input_spec"] == plan.input_spec.to_dict()
    flat = {k: v for k, v in stored.items() if k != "input_spec"}
    spec = stored["input_spec"]
    # the flat fields the plan held before (crop_pct was always written; interpolation etc. were not)
    flat.update(class_names=spec["class_names"], input_shape=spec["input_shape"], mean=spec["mean"],
                std=spec["std"], crop_pct=spec["crop_pct"])
    again = AblationPlan.from_dict(json.loads(json.dumps(flat)))
    assert again.input_spec == plan.input_spec == InputSpec.from_dict(spec)
    assert again.fingerprint == plan.fingerprint
