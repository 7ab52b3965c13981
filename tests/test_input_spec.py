"""The input contract (emobench_common.input_spec): one declaration, its serialised forms, clear refusals,
and the one transform built from it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emobench_common.input_spec import (
    DEFAULT_CROP_PCT,
    DEFAULT_INTERPOLATION,
    DEFAULT_VALUE_RANGE,
    InputSpec,
    InputSpecError,
)
from training.transforms import EvalTransform, create_eval_transform

CLASSES = ("angry", "happy", "sad")
SPEC = InputSpec(class_names=CLASSES, input_shape=(3, 32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))

# exactly what export wrote into manifest.json before the contract carried crop_pct/interpolation
OLD_MANIFEST_INPUT = {"name": "input", "shape": [2, 3, 32, 32], "dtype": "float32", "layout": "NCHW",
                      "color": "RGB", "image_size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
                      "value_range": "RGB scaled to 0..1, then (x - mean) / std per channel"}


def test_defaults_are_the_values_every_consumer_used_before():
    assert (SPEC.crop_pct, SPEC.interpolation, SPEC.value_range) == (1.0, "bilinear", (0.0, 1.0))
    assert (DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, DEFAULT_VALUE_RANGE) == (1.0, "bilinear", (0.0, 1.0))
    assert SPEC.image_size == 32 and SPEC.num_classes == 3 and SPEC.batch_shape(4) == (4, 3, 32, 32)


def test_round_trips_through_dict_and_manifest_input():
    spec = InputSpec(class_names=CLASSES, input_shape=(3, 48, 48), mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0),
                     crop_pct=0.875, interpolation="bicubic", value_range=(-1.0, 1.0))
    assert InputSpec.from_dict(spec.to_dict()) == spec
    entry = spec.to_manifest_input(batch_size=2)
    assert entry["shape"] == [2, 3, 48, 48] and entry["image_size"] == 48 and entry["crop_pct"] == 0.875
    assert InputSpec.from_manifest_input(entry, CLASSES) == spec


def test_older_manifest_input_reads_with_the_old_defaults():
    spec = InputSpec.from_manifest_input(OLD_MANIFEST_INPUT, CLASSES, source="old/manifest.json")
    assert spec == SPEC


@pytest.mark.parametrize(("change", "field"), [
    ({"std": [0.2, 0.0, 0.3]}, "std"),
    ({"mean": [0.5, 0.4]}, "mean"),
    ({"crop_pct": 1.5}, "crop_pct"),
    ({"interpolation": "lanczos"}, "interpolation"),
    ({"layout": "NHWC"}, "layout"),
    ({"class_names": ["a", "a"]}, "class_names"),
    ({"value_range": [1.0, 0.0]}, "value_range"),
])
def test_bad_fields_are_refused_by_name(change, field):
    data = {**SPEC.to_dict(), **change}
    with pytest.raises(InputSpecError, match=rf"some/file: .*field {field}"):
        InputSpec.from_dict(data, source="some/file")


def test_missing_field_and_bad_shape_are_named():
    data = SPEC.to_dict()
    del data["mean"]
    with pytest.raises(InputSpecError, match="x.json: field mean is missing"):
        InputSpec.from_dict(data, source="x.json")
    with pytest.raises(InputSpecError, match=r"x.json: field input/shape must be \[batch"):
        InputSpec.from_manifest_input({**OLD_MANIFEST_INPUT, "shape": [3, 32, 32]}, CLASSES, source="x.json")


def _face(size: int = 57) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size + 9, 3), dtype=np.uint8))


def test_one_transform_from_the_contract_matches_the_old_preprocessing():
    image = _face()
    old = EvalTransform(image_size=32, mean=SPEC.mean, std=SPEC.std)(image).numpy()  # how consumers called it
    new = create_eval_transform(SPEC)(image).numpy()
    assert new.shape == (3, 32, 32) and np.array_equal(old, new)
    cropped = create_eval_transform(InputSpec(**{**SPEC.__dict__, "crop_pct": 0.5}))(image).numpy()
    bicubic = create_eval_transform(InputSpec(**{**SPEC.__dict__, "interpolation": "bicubic"}))(image).numpy()
    assert not np.allclose(cropped, new) and not np.allclose(bicubic, new)


def test_non_square_contract_has_no_transform():
    spec = InputSpec(class_names=CLASSES, input_shape=(3, 32, 40), mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(InputSpecError, match="32x40 is not square"):
        create_eval_transform(spec)
