"""DDP on CPU (gloo): two processes train to the same weights as one process (within float tolerance)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training._helpers import tiny_config
from training.checkpoint import load_checkpoint_dict
from training.train import train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# No randomness but the shuffle (no augmentation, mixup or dropout), and GroupNorm instead of BatchNorm:
# per-rank batch statistics would otherwise legitimately differ from one process's.
SETTINGS = dict(arch="test_efficientnet_gn", epochs=2, augment=False, mixup_alpha=0.0, drop_rate=0.0,
                limit_train_images=32, limit_eval_images=14, grad_clip_norm=None)

_RANK_SCRIPT = """
import sys
from pathlib import Path
from tests.training._helpers import tiny_config
from training.train import train
data, out = sys.argv[1], sys.argv[2]
train(tiny_config(Path(data), Path(out), batch_size=4, run_name="ddp", **{settings!r}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tiny_sample, tmp_path):
    single = train(tiny_config(tiny_sample["rafdb"], tmp_path / "single", batch_size=8, run_name="one", **SETTINGS))

    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _RANK_SCRIPT.format(settings=SETTINGS), str(tiny_sample["rafdb"]),
             str(tmp_path / "ddp")], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)

    run = tmp_path / "ddp" / "phase2" / "ddp-test_efficientnet_gn"
    ddp_state = load_checkpoint_dict(run / "last.pt")
    assert ddp_state["world_size"] == 2
    a = load_checkpoint_dict(single.run_dir / "last.pt")["model_state"]
    b = ddp_state["model_state"]
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, f"DDP weights differ from single-process by up to {worst}"
    # Evaluation is gathered across ranks: the same metrics over the same 14 images.
    import json

    ddp_metrics = json.loads((run / "metrics.json").read_text())
    assert ddp_metrics["num_samples"] == single.metrics["num_samples"] == 14
    assert ddp_metrics["confusion_matrix"] == single.metrics["confusion_matrix"]
    # Only rank 0 wrote: one run folder.
    assert [d.name for d in (tmp_path / "ddp" / "phase2").iterdir() if d.name != "latest"] == [run.name]
    assert torch.equal(torch.tensor(ddp_state["history"][-1]["epoch"]), torch.tensor(2))
