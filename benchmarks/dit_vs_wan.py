"""Our DiT against diffusers' WanTransformer3DModel, forward + backward, in many alternating rounds,
with candidate speed-ups patched into ours (nothing in kinema/models is changed):

    python benchmarks/dit_vs_wan.py --threads 1 --batch 8 --rounds 40

  ours        the DiT as it is
  rms_fused   QK-norm through torch's fused F.rms_norm instead of the hand-written RMSNorm
  rope_wan    RoPE written as diffusers' Wan does (strided writes into an empty tensor)
  both        the two together
  wan         WanTransformer3DModel matched as in kinema/bench/versus.py

Prints each one's median and its ratio to Wan (median of times, and median of the per-round
ratios, which is steadier on a shared machine). docs/BENCHMARKS.md has the figures.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import kinema.models.dit as dit_module
from kinema.bench.versus import wan_transformer_like
from kinema.models.dit import DiT, dit_config


def rms_fused(self, x):
    return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_wan(x, cos, sin):
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="dit-t")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--latent", type=int, nargs=3, default=(5, 8, 8), help="latent T H W (default: 64x64x17)")
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dit_config(args.preset, in_channels=16, text_dim=384)
    x = torch.randn(args.batch, 16, *args.latent)
    t, text = torch.rand(args.batch), torch.randn(args.batch, args.text_len, 384)
    rms, rope = dit_module.RMSNorm.forward, dit_module.apply_rope
    variants = {"ours": (rms, rope), "rms_fused": (rms_fused, rope), "rope_wan": (rms, rope_wan),
                "both": (rms_fused, rope_wan)}

    def runner(model, rms_fn, rope_fn):
        def run():
            dit_module.RMSNorm.forward, dit_module.apply_rope = rms_fn, rope_fn
            model(x, t, text).square().mean().backward()
        return run

    fns = {}
    for name, (rms_fn, rope_fn) in variants.items():
        torch.manual_seed(0)
        fns[name] = runner(DiT(cfg), rms_fn, rope_fn)
    wan = wan_transformer_like(cfg)
    fns["wan"] = lambda: wan(x, t * 1000, text, return_dict=False)[0].square().mean().backward()
    for fn in fns.values():  # warm-up
        fn()
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    dit_module.RMSNorm.forward, dit_module.apply_rope = rms, rope
    w = statistics.median(times["wan"])
    print(f"{args.preset}, batch {args.batch}, latent {tuple(args.latent)}, {args.threads} thread(s), "
          f"{args.rounds} rounds")
    for k, v in times.items():
        per_round = statistics.median(a / b for a, b in zip(v, times["wan"]))
        print(f"{k:10s} {statistics.median(v) * 1e3:8.1f} ms   ratio {statistics.median(v) / w:.3f}   "
              f"per-round {per_round:.3f}")


if __name__ == "__main__":
    main()
