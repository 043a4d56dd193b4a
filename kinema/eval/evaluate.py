"""`kinema eval`: a model on a prompt suite (adherence, VBench-style quality, Frechet distance to
real clips) and autoencoders by compression ratio, written as report.json + report.html.

    kinema eval --model DIR --suite shapes-v1 --prompts 100 --videos-per-prompt 2 --out REPORT_DIR
    kinema eval --report REPORT_DIR --compare OTHER_REPORT --out DIR     # re-render, side by side
    kinema eval --vae DIR [--vae DIR ...] --clips 200 --out REPORT_DIR    # autoencoders

What each number is: docs/evaluation.md.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .frechet import feature_sets, frechet_distance
from .quality import VideoAnalysis, require_cv2, summarise_quality
from .report import REPORT_JSON, load_report, render_html, vae_section, write_eval_html
from .suite import REFERENCE_SEED_OFFSET, real_clips, run_suite, suite_hash, suite_prompts


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}"


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' exists and is not a folder")
    return out


def _prepare_out(out: str | Path) -> Path:
    out = _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _folder(report_path: str | Path) -> Path:
    """The folder of a report given as its folder or its report.json (where its GIFs are)."""
    p = Path(report_path)
    return p if p.is_dir() else p.parent


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)  # never a half-written report


def evaluate_model(model: str | Path | None, out: str | Path, suite: str = "shapes-v1", prompts: int = 100,
                   videos_per_prompt: int = 2, width: int | None = None, height: int | None = None,
                   frames: int | None = None,
                   steps: int | None = None, guidance: float | None = None, i3d: str | Path | None = None,
                   gifs: int = 24, compare: str | Path | None = None, label: str | None = None,
                   progress: bool = True, refine_prompt: bool | None = None, eta: float | None = None) -> dict:
    """Generate the suite with a model, judge and measure it, write REPORT_DIR/report.{json,html}.
    Size and length left None are the model's own defaults (its model_index.json); so is prompt
    refinement (`refine_prompt` False: the DiT reads the suite's prompts as written)."""
    # Every argument is checked before the model loads or anything is generated.
    plist = suite_prompts(suite, prompts)
    require_cv2()
    if videos_per_prompt < 1 or gifs < 0:
        raise ValueError(f"--videos-per-prompt must be >= 1 and --gifs >= 0, got {videos_per_prompt} and {gifs}")
    if i3d is not None and not Path(i3d).is_file():
        raise FileNotFoundError(f"no I3D TorchScript file at '{i3d}'")
    other = load_report(compare) if compare is not None else None
    _check_out(out)
    from ..data.video_io import write_video
    from ..pipelines import KinemaPipeline

    t0 = time.perf_counter()
    pipe = KinemaPipeline.from_pretrained(model)
    if refine_prompt is not None:
        pipe.defaults.refine_prompt = refine_prompt
    run = run_suite(pipe, plist, videos_per_prompt, frames, height, width, steps, guidance, progress=progress, eta=eta)
    t_gen = time.perf_counter() - t0
    out = _prepare_out(out)

    s = run.settings
    fps = pipe.defaults.fps
    generated = [VideoAnalysis(r.frames, fps) for r in run.results]
    real = [VideoAnalysis(f, fps) for f in real_clips(plist, s["width"], s["height"], s["num_frames"])]
    floor = [VideoAnalysis(f, fps) for f in real_clips(plist, s["width"], s["height"], s["num_frames"],
                                                      offset=REFERENCE_SEED_OFFSET)]
    per_video = [a.quality() for a in generated]
    fd_name, feats = feature_sets({"generated": generated, "real": real, "floor": floor}, i3d)
    t_metrics = time.perf_counter() - t0 - t_gen

    videos = []
    for n, (r, q) in enumerate(zip(run.results, per_video)):
        v = {**r.to_json(), "quality": q}
        if r.index == 0 and r.prompt.id < gifs:
            v["gif"] = f"gifs/p{r.prompt.id:04d}_v{r.index}.gif"
            write_video(out / v["gif"], r.frames, fps=fps)
        videos.append(v)
    fd = {"name": fd_name, "generated_vs_real": None, "real_vs_real": None, "real_clips": len(real),
          "features": ("I3D TorchScript from " + str(i3d)) if i3d else
          "FD-hand: 167 handcrafted spatio-temporal features (docs/evaluation.md); not FVD"}
    if len(real) >= 2:  # a covariance needs two clips a set
        fd["generated_vs_real"] = frechet_distance(feats["generated"], feats["real"])
        fd["real_vs_real"] = frechet_distance(feats["real"], feats["floor"])
    report = {
        "kind": "kinema-eval", "kinema_version": __version__, "label": label or Path(str(model or "default")).name,
        "model": str(model) if model is not None else "default",
        "created": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
        "suite": {"name": suite, "sha256": suite_hash(plist), **s, "fps": fps,
                  "refine_prompt": bool(pipe.defaults.refine_prompt and pipe.refiner is not None)},
        "adherence": run.summary(),
        "quality": {"generated": summarise_quality(per_video),
                    "real": summarise_quality([a.quality() for a in real])},
        "frechet": fd,
        "seconds": {"generate": round(t_gen, 1), "metrics": round(t_metrics, 1),
                    "total": round(time.perf_counter() - t0, 1),
                    "per_video": round(float(np.mean([r.seconds for r in run.results])), 3)},
        "videos": videos,
    }
    _write_json(out / REPORT_JSON, report)
    write_eval_html(report, out, other, _folder(compare) if compare is not None else None)
    return report


def rerender(report_path: str | Path, out: str | Path, compare: str | Path | None = None) -> Path:
    """report.html again from a saved report (and, with `compare`, another one side by side)."""
    src = Path(report_path)
    report = load_report(src)
    if report.get("kind") != "kinema-eval":
        raise ValueError(f"'{report_path}' is not a `kinema eval --model` report")
    other = load_report(compare) if compare is not None else None
    folder = _folder(src)
    out = _prepare_out(out)
    if out.resolve() != folder.resolve():  # keep the sample GIFs next to the page
        for v in report["videos"]:
            if v.get("gif") and (folder / v["gif"]).is_file():
                (out / v["gif"]).parent.mkdir(parents=True, exist_ok=True)
                (out / v["gif"]).write_bytes((folder / v["gif"]).read_bytes())
        _write_json(out / REPORT_JSON, report)
    return write_eval_html(report, out, other, _folder(compare) if compare is not None else None)


def compression(vae) -> tuple[str, float]:
    """('4x8x8, 16 ch', pixel values per latent value) of an autoencoder."""
    ts, ss, c = vae.temporal_stride, vae.spatial_stride, vae.latent_channels
    return f"{ts}x{ss}x{ss}, {c} ch", 3 * ts * ss * ss / c


def evaluate_autoencoders(vae_dirs: list[str | Path], out: str | Path, clips: int = 200, seed: int = 0,
                          width: int = 64, height: int = 64, frames: int = 17, progress: bool = True) -> dict:
    """Held-out PSNR, SSIM and judge survival of each autoencoder (kinema.autoencoder.train's
    evaluate_vae), as one table sorted by compression ratio; report.json + report.html."""
    from ..autoencoder import CausalVideoVAE
    from ..autoencoder.train import EVAL_SEED_BASE, evaluate_vae

    if clips < 1:
        raise ValueError(f"--clips must be >= 1, got {clips}")
    for d in vae_dirs:
        if not (Path(d) / "config.json").is_file():
            raise FileNotFoundError(f"'{d}' is not an autoencoder folder: no config.json in it")
    rows = []
    for d in vae_dirs:
        vae = CausalVideoVAE.from_pretrained(d)
        name, ratio = compression(vae)
        res = evaluate_vae(vae, clips, seed, width, height, frames, progress=progress)
        rows.append({"name": Path(d).name, "path": str(d), "compression": name, "ratio": ratio,
                     "latent_shape": list(vae.latent_shape(frames, height, width)), **res})
    rows.sort(key=lambda r: r["ratio"])
    out = _prepare_out(out)
    report = {"kind": "kinema-eval-vae", "kinema_version": __version__,
              "created": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "clips": {"count": clips, "world_seeds": f"{EVAL_SEED_BASE + seed} + i", "size": [width, height, frames]},
              "autoencoders": rows}
    _write_json(out / REPORT_JSON, report)
    (out / "report.html").write_text(render_html("Kinema eval: autoencoders by compression ratio",
                                                 f"<p>{clips} held-out clips {width}x{height}x{frames}, world seeds "
                                                 f"{EVAL_SEED_BASE + seed} + i</p>" + vae_section(rows)))
    return report


# `kinema eval`'s flags that only some modes use arrive unset (None), so a flag the chosen mode
# would ignore is an error rather than silently doing nothing; then the defaults are filled in.
DEFAULTS = {"suite": "shapes-v1", "prompts": 100, "videos_per_prompt": 2, "gifs": 24, "clips": 200, "seed": 0}
VAE_DEFAULTS = {"width": 64, "height": 64, "frames": 17}  # a --model run uses the model's own defaults
USES = {"model": {"suite", "prompts", "videos_per_prompt", "width", "height", "frames", "steps", "guidance", "eta",
                  "i3d", "gifs", "compare", "label", "no_refine"},
        "report": {"compare"}, "vae": {"clips", "seed", "width", "height", "frames"}}


def run_command(o: dict) -> dict:
    """`kinema eval` from its parsed flags (a dict); returns the summary it prints."""
    modes = [m for m in ("model", "report", "vae") if o.get(m)]
    if len(modes) > 1:
        raise ValueError(f"give one of --model, --report or --vae, not {' and '.join('--' + m for m in modes)}")
    mode = modes[0] if modes else "model"
    for flag in sorted(set().union(*USES.values()) - USES[mode]):
        if o.get(flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} does not apply to "
                             f"{'a --model run' if mode == 'model' else '--' + mode}")
    defaults = {**DEFAULTS, **(VAE_DEFAULTS if mode == "vae" else {})}
    o = {**o, **{k: v for k, v in defaults.items() if o.get(k) is None}}
    if o.get("threads"):
        import torch

        torch.set_num_threads(o["threads"])
    progress = not o.get("quiet")
    if mode == "vae":
        r = evaluate_autoencoders(o["vae"], o["out"], o["clips"], o["seed"], o["width"], o["height"], o["frames"],
                                  progress=progress)
        keep = ("name", "compression", "ratio", "psnr", "ssim", "judge_pass")
        return {"out": o["out"], "autoencoders": [{k: row[k] for k in keep} for row in r["autoencoders"]]}
    if mode == "report":
        return {"out": str(rerender(o["report"], o["out"], o["compare"]))}
    if o.get("model") is not None and not Path(o["model"]).is_dir():
        raise FileNotFoundError(f"no model folder at '{o['model']}'")
    r = evaluate_model(o.get("model"), o["out"], o["suite"], o["prompts"], o["videos_per_prompt"], o["width"],
                       o["height"], o["frames"], o.get("steps"), o.get("guidance"), o.get("i3d"), o["gifs"],
                       o.get("compare"), o.get("label"), progress=progress,
                       refine_prompt=False if o.get("no_refine") else None, eta=o.get("eta"))
    ad = r["adherence"]
    return {"out": o["out"], "videos": ad["videos"], "pass_rate": ad["rate"],
            "by_attribute": {k: v["rate"] for k, v in ad["by_attribute"].items()},
            "untrained_wording": {"videos": ad["by_wording"]["untrained"]["videos"],
                                  "pass_rate": ad["by_wording"]["untrained"].get("rate")},
            "quality": r["quality"]["generated"], "frechet": r["frechet"], "seconds": r["seconds"]}
