"""DiT training throughput by autoencoder compression: 4x8x8 vs 4x16x16 vs 4x32x32 (DC-AE style).

The other half of the trade-off study (docs/autoencoder.md, "The trade-off study"): what each
autoencoder costs per training sample. For each autoencoder and square video size, three stages,
timed side by side in rounds (kinema/bench/timing.py `interleaved`), medians of --runs rounds
after one warm-up round:

- render:  one shapes-world clip made at the size (the data; the same for every autoencoder)
- encode:  the autoencoder's posterior mode for a batch of clips (--vae-batch, default the training
           batch), fp32, no grad, as the trainer's first epoch does (`kinema/train/dit.py`
           `_latents`); later epochs read a latent cache. Per clip it costs more at a larger
           batch (memory traffic: 4x8x8 at 128 px, one thread: 220 ms a clip at batch 2, 345 at 32)
- step:    one DiT training step on --batch latents: bf16 autocast forward, flow-matching loss,
           backward, grad clip, AdamW (the trainer's step, without EMA and logging)

and prints training samples/s with a latent cache (step alone) and without one (render + encode +
step, a first epoch or a never-repeating stream). Weights: trained autoencoder folders under runs/
where they exist, else random init (timing does not depend on weights); the DiT is random init of
--dit-preset at --dit-depth.

    python benchmarks/train_throughput.py --threads 1 --sizes 128 --batch 32 --dit-depth 12   # the study's runs
    python benchmarks/train_throughput.py --threads 1 --sizes 128,256 --batch 8 --dit-depth 12 --json reports/train-throughput.json
    python benchmarks/train_throughput.py --sizes 64 --frames 5 --runs 1 --batch 2   # a smoke run
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compression import (  # (the same recipes and folders)
    AUTOENCODERS,
    load_vae,
    parse_lists,
    save_json,
)

from kinema import flow
from kinema.bench.timing import interleaved, median
from kinema.eval.evaluate import machine
from kinema.models.dit import DiT, dit_config
from kinema.world import make_clip

TEXT_DIM, TEXT_LEN = 384, 40  # MiniLM states, the default model's text_max_length
STAGES = ("render", "encode", "step")


def clip_tensor(seed: int, size: int, frames: int) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1], as the trainer's loader gives a world clip."""
    video = torch.from_numpy(make_clip(seed, size, size, frames).frames)  # (T, H, W, 3) uint8
    return video.permute(3, 0, 1, 2).float() / 127.5 - 1.0


def build(name: str, size: int, frames: int, preset: str, depth: int | None, batch: int, vae_batch: int) -> dict:
    recipe, folder, patch = AUTOENCODERS[name]
    vae, source = load_vae(recipe, folder)
    torch.manual_seed(0)
    overrides = {"depth": depth} if depth else {}
    dit = DiT(dit_config(preset, in_channels=vae.latent_channels, text_dim=TEXT_DIM, patch_size=patch,
                         **overrides)).train()
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    latent = list(vae.latent_shape(frames, size, size))  # (C, T', h, w)
    n_tokens = math.prod(n // p for n, p in zip(latent[1:], patch))
    shift = flow.timestep_shift_for(n_tokens)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *latent, generator=g)
    noise = torch.randn(batch, *latent, generator=g)
    states, mask = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g), torch.ones(batch, TEXT_LEN, dtype=torch.bool)
    videos = torch.stack([clip_tensor(i, size, frames) for i in range(vae_batch)])

    def encode():
        with torch.no_grad():
            vae.normalize(vae.encode(videos).mode())

    def step():
        t = flow.sample_timesteps(batch, g, shift=shift)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = dit(flow.interpolate(x0, noise, t), t, states, mask)
        loss = flow.flow_loss(pred.float(), x0, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()

    return {"encode": encode, "step": step, "vae_source": source, "patch": patch, "latent": latent,
            "tokens": n_tokens, "dit_params": dit.num_params(), "vae_params": vae.num_params()}


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    fns, built = {}, {}
    for size in args.sizes:
        fns[f"render@{size}"] = lambda size=size: clip_tensor(12345, size, args.frames)
        for name in args.autoencoders:
            b = built[(name, size)] = build(name, size, args.frames, args.dit_preset, args.dit_depth, args.batch,
                                            args.vae_batch)
            fns[f"encode:{name}@{size}"], fns[f"step:{name}@{size}"] = b["encode"], b["step"]
    times = interleaved(fns, args.runs, torch.device("cpu"), warmup=1)
    rows = []
    for (name, size), b in built.items():
        render = median(times[f"render@{size}"])
        encode = median(times[f"encode:{name}@{size}"]) / args.vae_batch
        step = median(times[f"step:{name}@{size}"])
        rows.append({"autoencoder": name, "size": size, "frames": args.frames, "dit_patch": list(b["patch"]),
                     "latent": b["latent"], "tokens": b["tokens"], "vae_source": b["vae_source"],
                     "dit_params": b["dit_params"], "render_s_per_clip": render, "encode_s_per_clip": encode,
                     "step_s": step, "samples_per_s_cached": args.batch / step,
                     "samples_per_s_uncached": args.batch / (step + args.batch * (render + encode))})
    return {"kind": "kinema-train-throughput-bench", "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "threads": torch.get_num_threads(), "dit_preset": args.dit_preset,
            "dit_depth": args.dit_depth, "batch": args.batch, "vae_batch": args.vae_batch, "runs": args.runs,
            "rows": rows}


def format_table(res: dict) -> str:
    depth = f", depth {res['dit_depth']}" if res["dit_depth"] else ""
    lines = [(f"{res['machine']}; {res['threads']} threads; DiT {res['dit_preset']}{depth}, batch {res['batch']}, "
              f"bf16 autocast; median of {res['runs']}"),
             (f"{'size':>9} {'autoencoder':<9} {'tokens':>6} {'render ms/clip':>15} {'encode ms/clip':>15} "
              f"{'step ms':>9} {'samples/s cached':>17} {'uncached':>9}")]
    base = {r["size"]: r for r in res["rows"] if r["autoencoder"] == "4x8x8"}
    for r in res["rows"]:
        b = base.get(r["size"])
        vs = f"  (x{r['samples_per_s_cached'] / b['samples_per_s_cached']:.2f} / " \
             f"x{r['samples_per_s_uncached'] / b['samples_per_s_uncached']:.2f} vs 4x8x8)" if b and b is not r else ""
        lines.append(f"{r['size']:>4}x{r['size']:<4} {r['autoencoder']:<9} {r['tokens']:>6} "
                     f"{r['render_s_per_clip'] * 1e3:15.1f} {r['encode_s_per_clip'] * 1e3:15.1f} "
                     f"{r['step_s'] * 1e3:9.1f} {r['samples_per_s_cached']:17.2f} {r['samples_per_s_uncached']:9.2f}"
                     + vs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--autoencoders", default=",".join(AUTOENCODERS), help="comma list (default: all three)")
    ap.add_argument("--sizes", default="128,256", help="square video sizes in pixels, comma list (default 128,256)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--batch", type=int, default=8, help="DiT training batch (default 8)")
    ap.add_argument("--vae-batch", type=int, help="clips per timed encode (default: --batch, as the trainer)")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (median), after one warm-up round")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--dit-preset", default="dit-t")
    ap.add_argument("--dit-depth", type=int, help="override the preset's depth (the default model: 12)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    parse_lists(ap, args)
    args.vae_batch = args.vae_batch or args.batch
    if min(args.runs, args.batch, args.vae_batch) < 1:
        ap.error("--runs, --batch and --vae-batch must be >= 1")
    res = run(args)
    print(format_table(res))
    if args.json:
        save_json(res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
