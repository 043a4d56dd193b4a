"""Distribution applied from outside the model (torchtitan's habit): the model files never
import torch.distributed; the trainer calls these.

Run with torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT:
    torchrun --nproc_per_node 2 -m kinema train dit --config configs/dit-t.toml
gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first CPU's feature flags (Linux), or None where the file cannot be read."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def slow_bf16_warning(device: torch.device, flags: set[str] | None = None) -> str | None:
    """What to tell a user who trains with bf16 autocast on a CPU without bf16 arithmetic (no
    AVX-512 BF16 or AMX): there it is emulated, ~20x slower than fp32 (a DiT step of the default
    recipe: 33 s against 1.6 s on an AVX2 machine, docs/training.md). None on GPUs, on CPUs with
    bf16, and where the flags cannot be read."""
    if device.type != "cpu":
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None or any(f in flags for f in BF16_CPU_FLAGS):
        return None
    return (f"precision = 'bf16' on a CPU without bf16 arithmetic (no {' or '.join(BF16_CPU_FLAGS)}; "
            f"torch: {torch.backends.cpu.get_cpu_capability()}): autocast is emulated and ~20x slower "
            "than fp32 here; set precision = 'fp32' (--set precision=fp32)")


def init_distributed() -> Dist:
    """Join the process group torchrun set up; a plain `python` run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local, device)


def wrap_ddp(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    if d.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


def mean_across(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of a scalar over ranks (for logging the global-batch loss)."""
    if d.world_size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / d.world_size


def any_across(flag: bool, d: Dist) -> bool:
    """True on every rank if it is true on any (a stop asked of one rank stops all at the same step)."""
    if d.world_size == 1:
        return flag
    value = torch.tensor(float(flag), device=d.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
