"""The ablation plan: deterministic, validated before anything runs, JSON round-trip, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from android_bench.plan import (
    AblationPlan,
    PlanConfig,
    PlanError,
    TargetSpec,
    build_plan,
    draw_batches,
    normalize_affinity,
    verify_plan_files,
)
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _cfg(manifest, sample, **kw) -> PlanConfig:
    base = dict(manifest=manifest, seen=sample["rafdb"], unseen=sample["custom"], experiments=30,
                batch_size=EXPORT_BATCH, warmup=1, repeats=1, seed=3)
    base.update(kw)
    return PlanConfig(**base)


def test_draw_batches_no_reuse_until_exhausted():
    ids = [f"img{i:02d}" for i in range(10)]
    batches = draw_batches(ids, 5, 2, seed=1, allow_reuse=False)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(10))  # every image exactly once
    reversed_batches = draw_batches(list(reversed(ids)), 5, 2, seed=1, allow_reuse=False)
    assert sorted(i for b in reversed_batches for i in b) == list(range(10)) and len(reversed_batches) == 5
    # order-independent ids: the same images are drawn whatever order the dataset lists them in
    assert [[ids[i] for i in b] for b in batches] == [
        [list(reversed(ids))[i] for i in b] for b in draw_batches(list(reversed(ids)), 5, 2, seed=1,
                                                                  allow_reuse=False)]
    with pytest.raises(PlanError, match="needs 12 images but has 10"):
        draw_batches(ids, 6, 2, seed=1, allow_reuse=False)
    reused = [i for b in draw_batches(ids, 8, 2, seed=1, allow_reuse=True) for i in b]
    assert sorted(reused[:10]) == list(range(10))  # the first pass uses every image before any repeats


def test_plan_is_deterministic_and_round_trips(manifest, tiny_sample):
    plan = build_plan(_cfg(manifest, tiny_sample))
    again = build_plan(_cfg(manifest, tiny_sample))
    assert plan == again and plan.fingerprint == again.fingerprint
    other = build_plan(_cfg(manifest, tiny_sample, seed=4))
    assert other.experiments != plan.experiments
    assert [e.role for e in plan.experiments] == ["seen", "unseen"] * 15
    assert all(len(e.image_ids) == EXPORT_BATCH for e in plan.experiments)
    for role in ("seen", "unseen"):
        ids = [i for e in plan.experiments if e.role == role for i in e.image_ids]
        assert len(ids) == len(set(ids))
    keys = [m.key for m in plan.models]
    assert keys[0] == "eager-fp32" and "executorch-int8-dynamic" in keys and "onnx-fp32" in keys
    orders = {e.model_order for e in plan.experiments}
    assert len(orders) > 1 and all(sorted(o) == sorted(keys) for o in orders)  # shuffled, complete
    restored = AblationPlan.from_dict(json.loads(plan.to_json()))
    assert restored == plan and restored.fingerprint == plan.fingerprint
    assert plan.differences(other) == ["experiments", "seed"]


def test_too_few_images_says_how_many(manifest, tiny_sample):
    with pytest.raises(PlanError) as info:
        build_plan(_cfg(manifest, tiny_sample, batch_size=EXPORT_BATCH, experiments=60))
    msg = info.value.message
    assert msg.startswith("seen dataset") and "[test] has 56 images; the plan needs 60" in msg
    assert "--allow-reuse" in info.value.hint
    plan = build_plan(_cfg(manifest, tiny_sample, experiments=60, allow_reuse=True))
    assert len(plan.experiments) == 60 and plan.allow_reuse


@pytest.mark.parametrize("kw, pattern", [
    (dict(targets=("gpu",)), "unknown target"),
    (dict(targets=("host-cpu", "host-cpu")), "listed twice"),
    (dict(repeats=0), "repeats"),
    (dict(affinity="xyz"), "hex mask"),
    (dict(models=("nope-fp32",)), "unknown model"),
    (dict(batch_size=3), "exported at batch 2"),
    (dict(seen=None, unseen=None), "at least one dataset"),
])
def test_bad_settings_are_refused(manifest, tiny_sample, kw, pattern):
    with pytest.raises(PlanError, match=pattern):
        build_plan(_cfg(manifest, tiny_sample, **kw))


def test_changed_or_missing_artifact_is_refused(tmp_path, manifest, tiny_sample):
    copy = tmp_path / "export"
    shutil.copytree(manifest.parent, copy)
    plan = build_plan(_cfg(copy / "manifest.json", tiny_sample, models=("executorch-fp32",), include_eager=False))
    pte = copy / plan.models[0].path
    data = pte.read_bytes()
    pte.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(PlanError, match="changed since the plan was made"):
        verify_plan_files(plan)
    with pytest.raises(PlanError, match="sha256"):
        build_plan(_cfg(copy / "manifest.json", tiny_sample, include_eager=False))
    pte.unlink()
    with pytest.raises(PlanError, match="missing"):
        build_plan(_cfg(copy / "manifest.json", tiny_sample, include_eager=False))


def test_target_and_affinity_parsing():
    assert TargetSpec.parse("android:127.0.0.1:5555") == TargetSpec("android:127.0.0.1:5555", "android",
                                                                     "127.0.0.1:5555")
    assert TargetSpec.parse("host-cuda").kind == "host-cuda"
    with pytest.raises(PlanError):
        TargetSpec.parse("android:")
    assert normalize_affinity("0xF0") == "f0"
    with pytest.raises(PlanError):
        normalize_affinity("0")
