"""End-to-end generation time by autoencoder compression: 4x8x8 vs 4x16x16 vs 4x32x32 (DC-AE style).

For each autoencoder and video size, one text-to-video generation per round: text encode, DiT
denoise for --steps steps with classifier-free guidance (the DiT runs batch 2), VAE decode. The
configurations are timed side by side in rounds (kinema/bench/timing.py `interleaved`), one warm-up
round first, and every stage is the median of --runs rounds (stage times: kinema/bench/stages.py
`stage_times`). Weights: a trained autoencoder folder (runs/vae-*) where one exists, else random
init from the recipe; the DiT is random init of --dit-preset (latency does not depend on weights).

    python benchmarks/compression.py --threads 2 --json reports/compression.json --plot reports/compression.png
    python benchmarks/compression.py --runs 1 --steps 1 --sizes 64 --frames 5       # a smoke run

Each row also carries the arithmetic of its generation in GFLOP (`count_gflop`), so a time ratio
can be read against the ratio of work: two pipelines running at the same FLOP/s cannot differ in
time by more than they differ in arithmetic.

| name     | recipe                      | DiT patch | tokens, 17 frames at 128 / 256 px |
| 4x8x8    | configs/vae-f8t4.toml       | 1x2x2     | 320 / 1280                        |
| 4x16x16  | configs/vae-f16t4.toml      | 1x1x1     | 320 / 1280 (same count, same 64 values a token) |
| 4x32x32  | configs/vae-f32t4.toml      | 1x1x1     | 80 / 320                          |
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

import torch

from kinema.autoencoder import CausalVideoVAE, VAEConfig
from kinema.bench.stages import stage_times
from kinema.bench.timing import interleaved, median
from kinema.config import from_dict, read_toml
from kinema.eval.evaluate import machine
from kinema.models.dit import DiT, dit_config
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import PipelineDefaults
from kinema.text import load_text_encoder

# name -> (recipe, trained folder used if present, DiT patch (t, h, w))
AUTOENCODERS = {
    "4x8x8": ("configs/vae-f8t4.toml", "runs/vae-f8t4", (1, 2, 2)),
    "4x16x16": ("configs/vae-f16t4.toml", "runs/vae-f16t4", (1, 1, 1)),
    "4x32x32": ("configs/vae-f32t4.toml", "runs/vae-f32t4", (1, 1, 1)),
}
STAGES = ("text_encode", "denoise", "decode", "total")
PROMPT = "a small red circle moving right on a gray background"


def load_vae(recipe: str, folder: str) -> tuple[CausalVideoVAE, str]:
    d = Path(folder)
    if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
        return CausalVideoVAE.from_pretrained(d), f"trained {folder}"
    torch.manual_seed(0)
    return CausalVideoVAE(from_dict(VAEConfig, read_toml(recipe).get("model", {}))).eval(), f"random init, {recipe}"


def build(names: list[str], preset: str) -> dict:
    text = load_text_encoder("minilm", max_length=32)  # one text encoder, shared: the same stage for all
    out = {}
    for name in names:
        recipe, folder, patch = AUTOENCODERS[name]
        vae, source = load_vae(recipe, folder)
        torch.manual_seed(0)
        dit = DiT(dit_config(preset, in_channels=vae.latent_channels, text_dim=text.dim, patch_size=patch)).eval()
        out[name] = {"pipe": KinemaPipeline(vae, dit, text, PipelineDefaults()), "vae_source": source, "patch": patch,
                     "vae_params": vae.num_params(), "dit_params": dit.num_params()}
    return out


def generation_round(pipe, frames: int, size: int, steps: int, guidance: float, record: list):
    """One generation; its stage times are appended to `record` (denoise = total - the other two)."""
    device = torch.device("cpu")

    def generate():
        pipe(PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(0), progress=False)

    return lambda: record.append(stage_times(pipe, device, generate))


@torch.no_grad()
def count_gflop(pipe, frames: int, size: int, steps: int, guidance: float) -> dict[str, float]:
    """Arithmetic of one generation in GFLOP, counted by torch's FlopCounterMode: `steps` DiT
    forwards at batch 2 (1 without guidance), and one decode. Attention runs its math path while
    counting (the fused CPU kernel is not counted by the flop counter), so its matmuls count too.
    What a video costs whatever the hardware: the ceiling of any time ratio between two pipelines
    that run at the same efficiency."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    batch = 1 if guidance == 1 else 2
    latent = pipe.vae.latent_shape(frames, size, size)
    states, mask = pipe.text_encoder.encode([PROMPT] * batch)
    x, t = torch.zeros(batch, *latent), torch.full((batch,), 0.5)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as dit_flops:
        pipe.dit(x, t, states, mask)
    with FlopCounterMode(display=False) as vae_flops:
        pipe.vae.decode(x[:1])
    return {"denoise": steps * dit_flops.get_total_flops() / 1e9, "decode": vae_flops.get_total_flops() / 1e9}


def tokens(pipe, frames: int, size: int) -> tuple[list[int], int]:
    latent = list(pipe.vae.latent_shape(frames, size, size))  # (C, T', h, w)
    return latent, math.prod(n // p for n, p in zip(latent[1:], pipe.dit.cfg.patch_size))


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    models = build(args.autoencoders, args.dit_preset)
    records, fns, rows = {}, {}, []
    for size in args.sizes:
        for name, m in models.items():
            key = f"{name}@{size}"
            m["pipe"].check_inputs(PROMPT, args.frames, size, size, args.steps, args.guidance)
            records[key] = []
            fns[key] = generation_round(m["pipe"], args.frames, size, args.steps, args.guidance, records[key])
    interleaved(fns, args.runs, torch.device("cpu"), warmup=1)  # rounds: every configuration once each
    for size in args.sizes:
        for name, m in models.items():
            rec = records[f"{name}@{size}"][1:]  # the first round was the warm-up
            latent, n_tokens = tokens(m["pipe"], args.frames, size)
            row = {"autoencoder": name, "size": size, "frames": args.frames, "dit_patch": list(m["patch"]),
                   "latent": latent, "tokens": n_tokens, "vae_source": m["vae_source"],
                   "vae_params": m["vae_params"], "dit_params": m["dit_params"]}
            row.update({stage: median([r[stage] for r in rec]) for stage in STAGES})
            row["gflop"] = count_gflop(m["pipe"], args.frames, size, args.steps, args.guidance)
            rows.append(row)
    return {"kind": "kinema-compression-bench", "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "threads": torch.get_num_threads(), "dit_preset": args.dit_preset,
            "steps": args.steps, "guidance": args.guidance, "runs": args.runs, "rows": rows,
            "ratios": ratios(rows)}


def ratios(rows: list[dict]) -> dict:
    """Per size: each autoencoder's end-to-end time over 4x8x8's, per stage (below 1: faster), and
    the same for arithmetic (`gflop_*`: denoise + decode, the text encoder being the same)."""
    out = {}
    by = {(r["autoencoder"], r["size"]): r for r in rows}
    for (name, size), r in by.items():
        base = by.get(("4x8x8", size))
        if base is not None and name != "4x8x8":
            q = {s: r[s] / base[s] for s in STAGES}
            if "gflop" in r and "gflop" in base:
                q.update({f"gflop_{s}": r["gflop"][s] / base["gflop"][s] for s in ("denoise", "decode")})
                q["gflop_total"] = sum(r["gflop"].values()) / sum(base["gflop"].values())
            out[f"{name} vs 4x8x8 at {size}x{size}"] = q
    return out


def format_table(res: dict) -> str:
    lines = [(f"{res['machine']}; {res['threads']} threads; DiT {res['dit_preset']}, {res['steps']} steps, "
              f"guidance {res['guidance']} (batch {2 if res['guidance'] != 1 else 1}); median of {res['runs']}"),
             (f"{'size':>9} {'autoencoder':<9} {'patch':<6} {'latent CxTxhxw':<16} {'tokens':>6} "
              f"{'text ms':>9} {'denoise ms':>11} {'decode ms':>10} {'total ms':>10} {'GFLOP dn+dec':>13}  weights")]
    for r in res["rows"]:
        lines.append(f"{r['size']:>4}x{r['size']:<4} {r['autoencoder']:<9} {'x'.join(map(str, r['dit_patch'])):<6} "
                     f"{'x'.join(map(str, r['latent'])):<16} {r['tokens']:>6} {r['text_encode'] * 1e3:9.1f} "
                     f"{r['denoise'] * 1e3:11.1f} {r['decode'] * 1e3:10.1f} {r['total'] * 1e3:10.1f} "
                     f"{r['gflop']['denoise']:>6.0f}+{r['gflop']['decode']:<6.0f}  {r['vae_source']}")
    for what, q in res["ratios"].items():
        lines.append(f"{what}: end-to-end x{q['total']:.3f} (denoise x{q['denoise']:.3f}, decode x{q['decode']:.3f})"
                     f" = {1 / q['total']:.2f}x faster; arithmetic {1 / q['gflop_total']:.2f}x less "
                     f"(denoise {1 / q['gflop_denoise']:.2f}x, decode {1 / q['gflop_decode']:.2f}x)")
    return "\n".join(lines)


def stage_bars(ax, res: dict) -> None:
    """Horizontal bars of each row's generation time, stacked by stage (also scripts/tradeoff_plot.py)."""
    rows = res["rows"]
    labels = [f"{r['autoencoder']} @ {r['size']}\n{r['tokens']} tokens" for r in rows]
    left = [0.0] * len(rows)
    for stage, color in (("text_encode", "tab:gray"), ("denoise", "tab:blue"), ("decode", "tab:orange")):
        widths = [r[stage] for r in rows]
        ax.barh(labels, widths, left=left, color=color, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds per video (median)")
    ax.set_title(f"{res['dit_preset']}, {res['steps']} steps, guidance {res['guidance']}; {res['threads']} threads")
    ax.legend(loc="lower right", fontsize=8)


def save_json(res: dict, path: str) -> None:
    """Write a benchmark's results atomically (a reader never sees half a file); say where."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"saved {path}")


def plot(res: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (it is not a Kinema dependency: pip install matplotlib); "
              "the table and JSON are written without the plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(res["rows"]) + 1.5))
    stage_bars(ax, res)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return True


def parse_lists(ap: argparse.ArgumentParser, args) -> None:
    """--autoencoders and --sizes (comma lists) into lists, in place; unknown names are an error."""
    args.autoencoders = [a.strip() for a in args.autoencoders.split(",") if a.strip()]
    unknown = [a for a in args.autoencoders if a not in AUTOENCODERS]
    if unknown:
        ap.error(f"unknown autoencoder(s) {unknown}; known: {list(AUTOENCODERS)}")
    args.sizes = [int(s) for s in args.sizes.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--autoencoders", default=",".join(AUTOENCODERS), help="comma list (default: all three)")
    ap.add_argument("--sizes", default="128,256", help="square video sizes in pixels, comma list (default 128,256)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--steps", type=int, default=30, help="denoising steps (default 30, the models' default)")
    ap.add_argument("--guidance", type=float, default=4.0, help="guidance scale; != 1 runs the DiT at batch 2")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (median), after one warm-up round")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--dit-preset", default="dit-t")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plot", help="write a PNG of the stage times here (needs matplotlib)")
    args = ap.parse_args(argv)
    parse_lists(ap, args)
    if args.runs < 1 or args.steps < 1:
        ap.error(f"--runs and --steps must be >= 1, got {args.runs} and {args.steps}")
    res = run(args)
    print(format_table(res))
    if args.json:
        save_json(res, args.json)
    if args.plot and plot(res, args.plot):
        print(f"saved {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
