"""`emobench latency` (the quick latency table) and evaluate_manifest on the tiny export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from android_bench.latency import format_latency_table, measure_latency
from emobench_app.evaluate_manifest import evaluate_manifest
from tests.device_results.tiny_export import build_tiny_export


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, tiny_sample) -> Path:
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)


def test_latency_table_on_host_and_virtual_device(manifest, virtual_device, adb_key):
    import functools

    from android_bench.device import connect

    rows = measure_latency(manifest, ("host-cpu", f"android:{virtual_device.address}"), runs=4, warmup=1, threads=1,
                           connect=functools.partial(connect, adb_key=adb_key))
    host = {r.model_key: r for r in rows if r.target == "host-cpu"}
    dev = {r.model_key: r for r in rows if r.target != "host-cpu"}
    assert set(host) == set(dev) and "eager-fp32" in host
    for key in ("executorch-fp32", "executorch-int8-dynamic"):
        for r in (host[key], dev[key]):
            assert r.runs == 4 and r.min_ms <= r.median_ms <= r.p90_ms <= r.max_ms and r.min_ms <= r.avg_ms
    assert dev["executorch-fp32"].is_virtual
    assert dev["onnx-fp32"].avg_ms is None and "not supported" in dev["onnx-fp32"].note
    assert host["executorch-int8-dynamic"].size_mb < host["executorch-fp32"].size_mb
    table = format_latency_table(rows)
    assert "(virtual)" in table and "median ms" in table
    # the virtual device ran emobench's native runner (built on demand), and the table says so
    assert dev["executorch-fp32"].runner == "native" and host["executorch-fp32"].runner == ""
    assert "(virtual) [native runner]" in table


def test_evaluate_manifest_every_artifact(manifest, tiny_sample, tmp_path):
    report = evaluate_manifest(manifest, tiny_sample["rafdb"], "test", tmp_path / "eval", threads=1)
    assert report["images"] == 7 * 8
    assert "eager-fp32" in report["models"] and "executorch-int8-dynamic" in report["models"]
    for key, metrics in report["models"].items():
        assert "error" not in metrics, (key, metrics)
        assert sum(map(sum, metrics["confusion_matrix"])) == 56
    # the FP32 artifacts reproduce the eager model
    assert report["models"]["executorch-fp32"]["confusion_matrix"] == report["models"]["eager-fp32"]["confusion_matrix"]
    on_disk = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert on_disk["models"].keys() == report["models"].keys()


def test_evaluate_command_accepts_a_manifest(manifest, tiny_sample, tmp_path):
    from click.testing import CliRunner

    from emobench import cli

    out = tmp_path / "cli-eval"
    result = CliRunner().invoke(cli, ["evaluate", str(manifest), "--data", str(tiny_sample["rafdb"]),
                                      "--split", "test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "executorch-int8-dynamic" in result.output and "accuracy" in result.output
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["images"] == 7 * 8 and "eager-fp32" in saved["models"]


def test_adb_key_option_reaches_the_device(manifest, tmp_path, adb_key):
    """`--adb-key` picks another key: the device trusts only that one, not the default ~/.android/adbkey."""
    from click.testing import CliRunner

    from android_bench.keys import ensure_adb_key
    from android_bench.virtual import VirtualDevice
    from emobench import cli

    other = ensure_adb_key(tmp_path / "other" / "adbkey", create=True)
    assert other != adb_key  # adb_key is the (temporary) default key
    with VirtualDevice(tmp_path / "device-root", authorized_keys=Path(f"{other}.pub")) as vd:
        target = f"android:{vd.address}"
        out = CliRunner().invoke(cli, ["latency", str(manifest), "--target", target, "--runs", "2", "--warmup", "0",
                                       "--no-eager", "--json", "--adb-key", str(other)])
        assert out.exit_code == 0, out.output
        rows = json.loads(out.stdout)
        assert {r["target"] for r in rows} == {target}
        assert any(r["model_key"] == "executorch-fp32" and r["avg_ms"] is not None for r in rows)
    for command in (["ablation"], ["latency"], ["demo"]):
        help_text = CliRunner().invoke(cli, [*command, "--help"]).output
        assert "--adb-key" in help_text, command
        assert "--runner" in help_text, command
