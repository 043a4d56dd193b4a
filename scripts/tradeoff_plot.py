"""The autoencoder trade-off study's figure (docs/autoencoder.md, "The trade-off study"), drawn from
the JSON the measuring commands write; nothing here measures anything.

    python scripts/tradeoff_plot.py \
        --vae reports/vae-study-128/report.json --vae reports/vae-study-256/report.json \
        --latency reports/compression.json --throughput reports/train-throughput.json \
        --study reports/study/ae-f8t4-128/report.json --study reports/study/ae-f16t4-128/report.json \
        --study reports/study/ae-f32t4-128/report.json --out docs/assets/autoencoder-tradeoff.png

Panels: reconstruction PSNR by size (judge survival written on each bar; `kinema eval --vae`),
generation time by stage (benchmarks/compression.py), DiT training samples/s with and without a
latent cache (benchmarks/train_throughput.py), and the pass rate with each attribute's after the
same training wall clock (`kinema eval --model` on the configs/study runs). Needs matplotlib (not a Kinema dependency).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compression import stage_bars  # (the benchmark's own plot of these rows)

ORDER = ("4x8x8", "4x16x16", "4x32x32")
COLOURS = {"4x8x8": "tab:blue", "4x16x16": "tab:green", "4x32x32": "tab:red"}


def short(compression: str) -> str:
    """'4x32x32, 128 ch' -> '4x32x32'."""
    return compression.split(",")[0]


def load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def bars(ax, groups: list[str], series: dict[str, list[float | None]], labels: dict[str, list[str]] | None = None):
    """Grouped bars: one group per x label, one bar per autoencoder (missing values left out)."""
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        for g, v in enumerate(values):
            if v is None:
                continue
            x = g + (k - (len(series) - 1) / 2) * width
            ax.bar(x, v, width, color=COLOURS.get(name, "gray"), label=name if g == 0 or values[0] is None else None)
            if labels and labels[name][g]:
                ax.text(x, v, labels[name][g], ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)


def draw(args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    # 1. reconstruction
    recon = [load(p) for p in args.vae]
    sizes = [f"{r['clips']['size'][0]} px, {r['clips']['count']} clips" for r in recon]
    psnr = {n: [None] * len(recon) for n in ORDER}
    surv = {n: [""] * len(recon) for n in ORDER}
    for i, r in enumerate(recon):
        for row in r["autoencoders"]:
            n = short(row["compression"])
            psnr[n][i], surv[n][i] = row["psnr"], f"{100 * row['judge_pass']:.0f}%"
    ax = axes[0][0]
    bars(ax, sizes, psnr, surv)
    ax.set_ylabel("PSNR, dB (judge survival on the bars)")
    ax.set_ylim(20, None)
    ax.set_title("reconstruction of held-out clips, 17 frames")
    ax.legend(fontsize=8)
    # 2. generation latency by stage
    stage_bars(axes[0][1], load(args.latency))
    # 3. training throughput
    tp = load(args.throughput)
    ax = axes[1][0]
    tsizes = sorted({r["size"] for r in tp["rows"]})
    groups = [f"{s} px\n{kind}" for s in tsizes for kind in ("cached", "uncached")]
    series = {n: [None] * len(groups) for n in ORDER}
    for r in tp["rows"]:
        i = 2 * tsizes.index(r["size"])
        series[r["autoencoder"]][i] = r["samples_per_s_cached"]
        series[r["autoencoder"]][i + 1] = r["samples_per_s_uncached"]
    bars(ax, groups, series)
    ax.set_ylabel("DiT training samples/s")
    ax.set_yscale("log")
    ax.set_title(f"training, depth {tp['dit_depth'] or 'preset'}, batch {tp['batch']}, {tp['threads']} thread(s)")
    # 4. adherence after the same wall clock: the pass rate and each attribute's, per autoencoder
    ax = axes[1][1]
    study = [load(p) for p in args.study]
    attrs = ("all", "colour", "shape", "size", "motion", "count")
    series = {}
    for r in study:
        vae = Path(r["model"] if isinstance(r["model"], str) else r["model"]["path"]).name
        name = next((n for n in ORDER if f"f{n.split('x')[1]}t4" in vae), vae)  # ae-f8t4-128-export
        adh = r["adherence"]
        series[name] = [100 * adh["rate"]] + [100 * adh["by_attribute"][a]["rate"] for a in attrs[1:]]
    bars(ax, list(attrs), series, {n: [f"{v:.0f}" for v in vals] for n, vals in series.items()})
    ax.set_ylabel("% of 100 prompts passing (size: of those with one)")
    ax.set_ylim(0, 100)
    ax.set_title("~30 min of training each, 128 px: pass, attributes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", action="append", required=True, help="a `kinema eval --vae` report.json (repeat)")
    ap.add_argument("--latency", required=True, help="benchmarks/compression.py --json output")
    ap.add_argument("--throughput", required=True, help="benchmarks/train_throughput.py --json output")
    ap.add_argument("--study", action="append", required=True, help="a `kinema eval --model` report.json (repeat)")
    ap.add_argument("--out", default="docs/assets/autoencoder-tradeoff.png")
    args = ap.parse_args(argv)
    draw(args)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
