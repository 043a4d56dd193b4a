"""DDP check: `torchrun --nproc_per_node 2` on CPU (gloo) against one process, same global batch.

Trains the same config twice, logs every step, and prints both loss curves and their largest
difference. Each sample's noise, timestep and caption dropout come from its own generator
(kinema/train/dit.py), so the two runs see identical samples; only the order of floating-point
sums differs (DDP averages two half-batch gradients).

    python benchmarks/ddp_curve.py --vae runs/vae-f8t4 --steps 100
    python benchmarks/ddp_curve.py --steps 100          # a random tiny autoencoder, made here
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", help="autoencoder folder (default: a random tiny one)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bucket", default="17,64,64", help="frames,height,width")
    ap.add_argument("--json", help="write both curves here")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ddp_curve_"))
    vae = a.vae
    if vae is None:
        import torch

        from kinema.autoencoder import CausalVideoVAE, VAEConfig

        torch.manual_seed(0)
        vae = str(tmp / "vae")
        CausalVideoVAE(VAEConfig(latent_channels=8, base_channels=16)).save_pretrained(vae)
    f, h, w = (int(v) for v in a.bucket.split(","))
    common = [f"vae={json.dumps(vae)}", f"steps={a.steps}", f"batch_size={a.batch_size}", "log_every=1",
              f"ckpt_every={a.steps}", "ema_decay=0", f"data.buckets=[[{f}, {h}, {w}]]", "data.bucket_weights=[1.0]", "data.num_clips=64",
              "threads=1"]
    runs = {}
    for name, launcher in (("single", [sys.executable, "-m", "kinema"]),
                           ("torchrun x2", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node", "2", "-m", "kinema"])):
        out = tmp / name.replace(" ", "_")
        cmd = launcher + ["train", "dit", "--config", "configs/dit-t.toml", "--quiet",
                          *[x for s in common + [f"out_dir={json.dumps(str(out))}"] for x in ("--set", s)]]
        print("$", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        runs[name] = losses(out)
    single, ddp = runs["single"], runs["torchrun x2"]
    diffs = [abs(single[s] - ddp[s]) for s in single]
    print(f"{'step':>5} {'single':>10} {'torchrun x2':>12} {'|diff|':>10}")
    for s in sorted(single):
        if s <= 5 or s % max(1, a.steps // 20) == 0:
            print(f"{s:>5} {single[s]:>10.5f} {ddp[s]:>12.5f} {abs(single[s] - ddp[s]):>10.2e}")
    summary = {"steps": a.steps, "global_batch": a.batch_size, "max_abs_diff": max(diffs),
               "max_rel_diff": max(d / abs(single[s]) for d, s in zip(diffs, sorted(single))),
               "final_loss_single": single[a.steps], "final_loss_ddp": ddp[a.steps]}
    print(json.dumps(summary, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "single": single, "torchrun_x2": ddp}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
