"""Quantization-aware training: the QAT phase trains from an FP32 run, resumes bit for bit, and exports INT8.

A tiny timm model (test_efficientnet, 32 px) on the tiny sample: one FP32 run shared by the module,
QAT runs of two short epochs each.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from emobench import cli
from tests.training._helpers import tiny_config
from training.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_dict
from training.config import ConfigError, load_config
from training.qat import QatModel, QatSettings, prepare_qat
from training.qat_run import resolve_qat_config
from training.quant_observers import OBSERVERS
from training.train import TrainingPreempted, train


@pytest.fixture(scope="module")
def fp32_run(tiny_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    return train(tiny_config(tiny_sample["rafdb"], out, epochs=2, run_name="fp32"))


def _qat_config(fp32_run, out, **changes):
    qat = {"epochs": 2, "freeze_observers_after": 1, **changes.pop("qat", {})}
    return resolve_qat_config(fp32_run.run_dir, overrides={"out_dir": str(out), "qat": qat, **changes})


def test_qat_config_inherits_the_fp32_run_and_takes_its_qat_section(fp32_run, tmp_path):
    config = _qat_config(fp32_run, tmp_path, qat={"lr": 3e-5})
    fp32 = fp32_run.metrics
    assert config.phase == "qat" and config.monitor == "agreement" and not config.pretrained
    assert (config.arch, config.image_size) == (fp32["arch"], fp32["image_size"]) == ("test_efficientnet", 32)
    assert config.data_root == load_checkpoint(fp32_run.checkpoint_path).config["data_root"]
    assert (config.epochs, config.lr) == (config.qat.epochs, config.qat.lr) == (2, 3e-5)
    assert config.init_from == str(fp32_run.checkpoint_path.resolve())
    # the section's defaults come from the FP32 run's own config (phase2.yaml's qat: section)
    assert config.qat.freeze_bn_after == 0 and config.qat.distill_weight == 1.0
    # the runs folder defaults to the FP32 run's (its phase folder's parent)
    default = resolve_qat_config(fp32_run.run_dir)
    assert default.out_dir == str(fp32_run.run_dir.resolve().parent.parent)


def test_qat_config_errors_name_the_key(fp32_run, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key qat\.epoch; did you mean qat\.epochs"):
        _qat_config(fp32_run, tmp_path, qat={"epoch": 3})
    with pytest.raises(ConfigError, match=r"qat\.distill_weight must lie in \[0, 1\]"):
        _qat_config(fp32_run, tmp_path, qat={"distill_weight": 1.5})
    with pytest.raises(ConfigError, match="monitor=agreement"):
        load_config(phase="phase2", overrides={"monitor": "agreement"})
    with pytest.raises(ConfigError, match="needs init_from"):
        load_config(phase="phase2", overrides={"phase": "qat"})
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("qat:\n  epochs: two\n")
    with pytest.raises(ConfigError, match=r"qat\.epochs expects int"):
        resolve_qat_config(fp32_run.run_dir, config_path=yaml_file)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_qat_config(tmp_path / "nothing.pt")
    with pytest.raises(ConfigError, match=r"qat\.init_observer must be auto, none or one of"):
        _qat_config(fp32_run, tmp_path, qat={"init_observer": "mse"})


def test_init_ranges_calibrates_like_static_int8_and_fixes_the_best_ranges():
    """One image 300x brighter than the rest: min/max ranges cover it; auto must keep a better observer."""
    import numpy as np
    from torch import nn

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 5)).eval()
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(128, 3, 16, 16)).astype(np.float32))
    images[100] *= 300
    student = prepare_qat(teacher, (3, 16, 16))
    student.eval()
    record = student.init_ranges(teacher, images, OBSERVERS)
    trials = {t["observer"]: t for t in record["trials"]}
    assert set(trials) == set(OBSERVERS) and record["observer"] == record["trials"][0]["observer"]
    assert trials[record["observer"]]["top1_agreement"] > trials["minmax"]["top1_agreement"] + 0.1
    # the chosen ranges are in place: re-measuring the fake-quantized graph gives the recorded agreement
    with torch.no_grad():
        agreement = float((student(images).argmax(1) == teacher(images).argmax(1)).float().mean())
        converted = student.converted()(images)
    assert agreement == trials[record["observer"]]["top1_agreement"]
    # ... and convert_pt2e (which reads the observers) makes the same INT8 model the fake quantizers simulate
    assert float((converted.argmax(1) == teacher(images).argmax(1)).float().mean()) >= agreement - 0.05
    # activation ranges are fixed from now on; the weights' per-channel ranges keep following the weights
    every, acts = student._fake_quantizers()
    assert acts and all(int(m.observer_enabled[0]) == 0 for m in acts.values())
    assert all(int(m.observer_enabled[0]) == 1 for n, m in every.items() if n not in acts)
    assert QatSettings(init_observer="none").to_dict()["init_observer"] == "none"


@pytest.fixture(scope="module")
def qat_run(fp32_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    return out, train(_qat_config(fp32_run, out, run_name="q"))


def test_conv_bn_rewrites_run_only_for_conv_kinds_the_graph_has(qat_run):
    """convert skips torchao's conv-bn folds for conv kinds the model lacks, and still folds every batch norm."""
    from torch.fx import Graph

    from training.qat import conv_bn_rewrites_for, conv_kinds_in, drop_batch_counter_updates, op_names

    _, result = qat_run
    qat = load_checkpoint(result.checkpoint_path).build_qat_model()
    assert conv_kinds_in(qat.graph.graph) == {"conv2d"}
    generic = Graph()
    generic.call_function(torch.ops.aten.convolution.default, ())
    assert conv_kinds_in(generic) == {"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}

    import copy

    import torchao.quantization.pt2e.qat_utils as qat_utils
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    original = qat_utils._fold_conv_bn_qat_helper
    graph = copy.deepcopy(qat.graph)
    move_exported_model_to_eval(graph)
    with conv_bn_rewrites_for(graph.graph) as skipped:
        assert qat_utils._fold_conv_bn_qat_helper is not original
        converted = convert_pt2e(graph)
    assert qat_utils._fold_conv_bn_qat_helper is original  # restored
    assert sorted(skipped) == ["conv1d", "conv_transpose1d", "conv_transpose2d"]
    ops = op_names(converted.graph)
    # the conv2d fold ran: no batch norm is left beside its conv (the INT8 conv carries it, as on the device)
    assert "conv2d" in ops and not ops & {"batch_norm", "_native_batch_norm_legit_no_training"}, ops
    # torchao leaves timm's BatchNormAct2d counters (num_batches_tracked += 1) in; converted() drops them, so the
    # int8-qat program mutates no state per inference
    counters = [n for n in converted.graph.nodes if n.target == torch.ops.aten.add_.Tensor]
    assert counters and drop_batch_counter_updates(converted) == len(counters)
    mutated = [n for n in qat.converted().graph.nodes if n.op == "call_function" and n.target._schema.is_mutable
               and n.args and getattr(n.args[0], "op", None) == "get_attr"]
    assert not mutated, mutated


def test_qat_trains_from_the_fp32_run_and_writes_a_qat_checkpoint(fp32_run, qat_run):
    out, result = qat_run
    assert result.run_dir == out / "qat" / "q-test_efficientnet"
    assert [set(row) >= {"val_agreement", "val_accuracy"} for row in result.history] == [True, True]
    assert 0.0 <= result.metrics["agreement"] <= 1.0 and result.metrics["qat"]["epochs"] == 2
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["phase"] == "qat" and metrics["agreement"] == result.metrics["agreement"]
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt.qat is not None and ckpt.qat["init_from"] == str(fp32_run.checkpoint_path.resolve())
    assert ckpt.qat["settings"]["freeze_observers_after"] == 1
    # the activation ranges started from a calibration: every observer tried, the best kept (auto)
    init = ckpt.qat["range_init"]
    assert init == result.metrics["qat"]["range_init"] and init["observer"] == init["trials"][0]["observer"]
    assert {t["observer"] for t in init["trials"]} == set(OBSERVERS) and init["images"] > 0
    # build_model() is the FP32 reference the run started from, bit for bit
    fp32_state = load_checkpoint(fp32_run.checkpoint_path).model_state
    reference = ckpt.build_model().state_dict()
    assert all(torch.equal(reference[k], fp32_state[k]) for k in fp32_state)
    # ... and the QAT graph came back with its learned ranges: fake-quantize state, not FP32 weights
    qat = ckpt.build_qat_model()
    assert isinstance(qat, QatModel) and any("activation_post_process" in k for k in ckpt.model_state)
    # every saved buffer comes back as saved, the observers' eps (XNNPACK's 2**-12) included
    loaded = qat.state_dict()
    bad = [k for k, v in ckpt.model_state.items() if not (loaded[k].shape == v.shape and torch.equal(loaded[k], v))]
    assert not bad, [(k, loaded[k], ckpt.model_state[k]) for k in bad[:3]]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fake = qat(x)
        converted = qat.converted()(x)
    assert fake.shape == converted.shape == (3, 7)
    assert (fake.argmax(1) == converted.argmax(1)).float().mean() >= 2 / 3
    # the weights moved: QAT trained (distillation from the FP32 model), it did not just copy
    weights = [k for k in ckpt.model_state if k.endswith("weight") and ckpt.model_state[k].dim() == 4]
    first = weights[0]
    fp32_first = next(v for k, v in fp32_state.items() if v.shape == ckpt.model_state[first].shape and k.endswith("weight"))
    assert not torch.equal(ckpt.model_state[first], fp32_first)


@pytest.mark.parametrize("stop_at_step", [1], ids=["mid-epoch"])
def test_qat_resume_reproduces_the_uninterrupted_run_bit_for_bit(fp32_run, tmp_path, stop_at_step):
    # augmentation and mixup draw random numbers; the observers freeze after epoch 1: all must replay
    common = {"augment": True, "mixup_alpha": 0.4}
    full = train(_qat_config(fp32_run, tmp_path / "a", run_name="full", **common))

    def preempt(epoch, step):
        if epoch == 0 and step == stop_at_step:
            os.kill(os.getpid(), signal.SIGUSR1)

    config = _qat_config(fp32_run, tmp_path / "b", run_name="job9", **common)
    with pytest.raises(TrainingPreempted) as info:
        train(config, on_step=preempt)
    saved = load_checkpoint_dict(info.value.run_dir / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (0, stop_at_step + 1) and saved["qat"]
    resumed = train(config.replace(resume="auto"))
    a = load_checkpoint_dict(full.run_dir / "last.pt")["model_state"]
    b = load_checkpoint_dict(resumed.run_dir / "last.pt")["model_state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed QAT state differs from the uninterrupted run"
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert resumed.metrics["agreement"] == full.metrics["agreement"]


def test_cli_train_qat_dry_run_and_export_refuses_qat_for_an_fp32_checkpoint(fp32_run, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "qat", "--init-from", str(fp32_run.run_dir), "--epochs", "3",
                              "--set", "qat.temperature=4", "--out", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "phase: qat" in res.output and "temperature: 4" in res.output and "epochs: 3" in res.output
    res = runner.invoke(cli, ["export", str(fp32_run.checkpoint_path), "--out", str(tmp_path / "e"),
                              "--formats", "executorch", "--int8-mode", "qat"])
    assert res.exit_code != 0
    assert "is not a QAT checkpoint" in res.output and "emobench train qat --init-from" in res.output
    res = runner.invoke(cli, ["export", str(fp32_run.checkpoint_path), "--out", str(tmp_path / "e"),
                              "--int8-mode", "dynamic,fast"])
    assert res.exit_code == 2 and "fast" in res.output


def test_export_of_a_qat_run_adds_verified_int8_qat_artifacts(qat_run, tiny_sample, tmp_path):
    from export.config import ExportConfig
    from export.pipeline import export_all

    _, result = qat_run
    config = ExportConfig(formats=("executorch", "onnx"), int8_modes=("qat",), eval_data=tiny_sample["rafdb"],
                          eval_images=8, jobs=1)
    manifest = export_all(result.checkpoint_path, tmp_path / "export", config)
    assert not manifest.failures
    by_label = {(a.format, a.precision, a.mode): a for a in manifest.artifacts}
    assert set(by_label) == {("executorch", "fp32", None), ("executorch", "int8", "qat"),
                             ("onnx", "fp32", None), ("onnx", "int8", "qat")}
    for fmt in ("executorch", "onnx"):
        artifact = by_label[(fmt, "int8", "qat")]
        q = artifact.quantization
        assert q is not None and "QAT" in q.method
        # every conv/linear weight of the QAT graph is INT8 (nothing left in FP32)
        assert q.layers_quantized == q.layers_total > 0, q
        # INT8 weights; on a model this small per-channel scales and QDQ nodes weigh a lot (B0: README)
        assert artifact.size_bytes < (0.5 if fmt == "executorch" else 0.8) * by_label[(fmt, "fp32", None)].size_bytes
    et = by_label[("executorch", "int8", "qat")]
    assert et.details["qat"]["init_from"] and et.details["qat"]["settings"]["epochs"] == 2
