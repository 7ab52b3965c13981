"""Process-group set-up for DistributedDataParallel under torchrun or srun.

Rank and world size come from the environment: torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
first, else an ``srun`` step's ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID`` (a batch
script's own shell is not a step: there ``SLURM_NTASKS`` may be > 1 but only one process runs, so it
is never taken as the world size). ``MASTER_ADDR``/``MASTER_PORT`` default to 127.0.0.1 and a port
derived from the Slurm job id. The backend is NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``world_size == 1``: no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


def detect() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's or srun's environment; (0, 1, 0) otherwise."""
    if os.environ.get("WORLD_SIZE") and os.environ.get("RANK"):
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), _env_int("LOCAL_RANK") or 0
    steps = _env_int("SLURM_STEP_NUM_TASKS")
    if steps and steps > 1 and os.environ.get("SLURM_PROCID"):
        return int(os.environ["SLURM_PROCID"]), steps, _env_int("SLURM_LOCALID") or 0
    return 0, 1, 0


def init(device_type: str) -> DistInfo:
    """Join (or create) the default process group when the environment says this is a multi-process job."""
    rank, world_size, local_rank = detect()
    if world_size == 1:
        return DistInfo()
    if torch_dist.is_initialized():
        return DistInfo(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(), local_rank=local_rank,
                        backend=str(torch_dist.get_backend()))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    job = _env_int("SLURM_JOB_ID") or 0
    os.environ.setdefault("MASTER_PORT", str(20000 + job % 20000))
    backend = "nccl" if device_type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                  timeout=_dt.timedelta(minutes=30))
    log.info("rank %d/%d joined the %s process group at %s:%s", rank, world_size, backend,
             os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, owns_group=True,
                    backend=backend)


def close(info: DistInfo) -> None:
    if info.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (used for the stop signal)."""
    if not info.enabled:
        return flag
    device = f"cuda:{torch.cuda.current_device()}" if info.backend == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())
