"""The ablation plan's `--faces` (unseen photos cropped to their face) and `--seen-kind` (a RAF-DB copy
sorted into emotion-named folders is labelled RAF-DB, not FER-2013)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from android_bench.inputs import preprocess_images
from android_bench.plan import AblationPlan, PlanConfig, build_plan
from tests.device_results.tiny_export import EXPORT_BATCH, build_tiny_export
from training.labels import RAFDB_IDS


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample):
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def _cfg(manifest, seen, unseen, **kw) -> PlanConfig:
    return PlanConfig(manifest=manifest, seen=seen, unseen=unseen, experiments=6, batch_size=EXPORT_BATCH, warmup=1,
                      repeats=1, seed=5, models=("executorch-fp32",), include_eager=False, **kw)


def test_faces_crops_the_unseen_images_only_and_is_kept_in_the_plan(manifest, tiny_sample):
    plain = build_plan(_cfg(manifest, tiny_sample["rafdb"], tiny_sample["custom"]))
    faces = build_plan(_cfg(manifest, tiny_sample["rafdb"], tiny_sample["custom"], unseen_faces=True))
    assert {d.role: d.faces for d in faces.datasets} == {"seen": False, "unseen": True}
    assert {d.role: d.faces for d in plain.datasets} == {"seen": False, "unseen": False}
    assert faces.experiments == plain.experiments  # the same images: only what the model sees of them differs
    assert AblationPlan.from_dict(faces.to_dict()) == faces
    a, b = preprocess_images(plain), preprocess_images(faces)
    for exp in plain.experiments:
        if exp.role == "seen":
            np.testing.assert_array_equal(a[exp.index], b[exp.index])
    unseen = [e.index for e in plain.experiments if e.role == "unseen"]
    assert any(not np.array_equal(a[i], b[i]) for i in unseen)  # the drawn faces are found and cropped


def test_seen_kind_reads_a_rafdb_copy_sorted_by_emotion_as_rafdb(manifest, tiny_sample, tmp_path):
    # RAF-DB's aligned faces re-sorted into train|test/<emotion name>/, as some Kaggle copies are
    labels = dict(line.split() for line in (tiny_sample["rafdb"] / "basic/EmoLabel/list_patition_label.txt")
                  .read_text().split("\n") if line)
    copy = tmp_path / "raf-by-emotion"
    for name, label in labels.items():
        split = name.split("_")[0]
        target = copy / split / RAFDB_IDS[int(label)] / name.replace(".jpg", "_aligned.jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_sample["rafdb"] / "basic/Image/aligned" / target.name, target)
    detected = build_plan(_cfg(manifest, copy, tiny_sample["custom"]))
    told = build_plan(_cfg(manifest, copy, tiny_sample["custom"], seen_kind="rafdb_folder"))
    seen_detected = next(d for d in detected.datasets if d.role == "seen")
    seen_told = next(d for d in told.datasets if d.role == "seen")
    assert (seen_detected.kind, seen_detected.name) == ("fer2013_folder", "fer2013:raf-by-emotion")
    assert (seen_told.kind, seen_told.name) == ("rafdb_folder", "rafdb:raf-by-emotion")
    assert seen_told.n_images == sum(1 for n in labels if n.startswith("test"))
