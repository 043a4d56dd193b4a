"""The DiT trainer's update, op by op: how many host-side operations it dispatches and how long it
takes, with the per-tensor optimizer and EMA (PyTorch's CPU defaults, the trainer before
2026-11-30) against the fused AdamW and foreach EMA it uses now (`kinema/train/optim.py`
`make_adamw`, `kinema/train/dit.py` `ema_update`).

Why count operations: on a lent H200 the default model's step at batch 256 took 133 ms against a
23 ms forward (docs/training.md, "On a lent GPU"). At 80 tokens a sample the kernels are tiny, so
the step is bound by the host dispatching them, not by the GPU; the count of top-level aten
operations (device-independent up to the optimizer's kernels) is what such a step pays for.

    python benchmarks/train_step.py --model kinema/weights/default --batch 32 --threads 2 --runs 9
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from kinema import flow
from kinema.pipelines.pipeline import dit_folder, load_dit
from kinema.train.dit import ema_update
from kinema.train.optim import OptimConfig, make_adamw


def loop_ema(ema, model, decay):  # the trainer's EMA before: one lerp a tensor
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)


def make_step(dit, variant: str, batch: int, generator: torch.Generator):
    model = copy.deepcopy(dit).train()
    ema = copy.deepcopy(dit).requires_grad_(False)
    o = OptimConfig(lr=1e-4)
    if variant == "before":
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    else:
        opt = make_adamw(model.parameters(), o)
    cfg = model.cfg
    x0 = torch.randn(batch, cfg.in_channels, 5, 8, 8, generator=generator)
    noise, t = torch.randn(x0.shape, generator=generator), torch.rand(batch, generator=generator)
    text, mask = torch.randn(batch, 40, cfg.text_dim, generator=generator), torch.ones(batch, 40, dtype=torch.bool)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(flow.interpolate(x0, noise, t), t, text, mask)
        loss = flow.flow_loss(pred.float(), x0, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=variant != "before")
        opt.step()
        (loop_ema if variant == "before" else ema_update)(ema, model, 0.999)
    return step


def op_count(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="kinema/weights/default")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--runs", type=int, default=9)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    folder = Path(a.model)
    dit = load_dit(dit_folder(folder))
    g = torch.Generator().manual_seed(0)
    steps = {v: make_step(dit, v, a.batch, g) for v in ("before", "now")}
    for s in steps.values():
        s()  # warm-up, and the optimizer state exists
    counts = {v: op_count(s) for v, s in steps.items()}
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(a.runs):  # interleaved rounds: the machine's drift hits both alike
        for v, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    print(f"{folder} ({sum(p.numel() for p in dit.parameters()) / 1e6:.1f} M parameters, "
          f"{len(list(dit.parameters()))} tensors), batch {a.batch}, {torch.get_num_threads()} threads, "
          f"median of {a.runs} interleaved rounds")
    for v in steps:
        print(f"  {v:6s}: {counts[v]:5d} top-level aten ops a step, {1e3 * med[v]:7.1f} ms a step "
              f"({a.batch / med[v]:.1f} samples/s)")
    print(f"  now / before: ops {counts['now'] / counts['before']:.3f}, time {med['now'] / med['before']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
