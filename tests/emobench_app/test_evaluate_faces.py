"""`emobench evaluate --faces`: the unseen photos are scored as face crops, and the scan is reported."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emobench import cli
from tests.device_results.tiny_export import build_tiny_export


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample):
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def test_evaluate_manifest_with_faces(manifest, tiny_sample, tmp_path):
    args = ["evaluate", str(manifest), "--data", str(tiny_sample["custom"]), "--split", "all"]
    plain = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "plain"), "--json"])
    faces = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "faces"), "--faces"])
    assert plain.exit_code == 0, plain.output
    assert faces.exit_code == 0, faces.output
    stored = json.loads((tmp_path / "faces" / "evaluation.json").read_text())
    assert "faces" not in json.loads(plain.output)
    cropped = int(stored["faces"].split(" cropped")[0].removeprefix("faces: "))
    assert stored["images"] == 42 and 0 < cropped <= 42  # 7 classes x 6 photos; the drawn faces are found
    assert stored["faces"] in faces.output
    # the same images, seen differently: at least one model's predictions changed
    before = json.loads(plain.output)["models"]
    after = stored["models"]
    assert set(before) == set(after)
    assert any(before[k]["confusion_matrix"] != after[k]["confusion_matrix"] for k in before)
