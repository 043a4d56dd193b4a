"""The `kinema` command line.

    kinema data synth --out DIR --clips N [--width 64 --height 64 --frames 17 --fps 8 --seed 0]
    kinema data check CSV [--fill]
    kinema world sample --seed S --out clip.mp4 [--width --height --frames --fps]
    kinema judge VIDEO --prompt "a red ball moving right"
    kinema train vae --config configs/vae-f8t4.toml [--set key=value ...]
    kinema train dit --config configs/dit-t.toml [--set key=value ...]   (or under torchrun)
    kinema train latents --config configs/default-gpu.toml   (a DiT config's pool, encoded ahead)
    kinema generate "PROMPT" --out out.mp4 [--model DIR --seed --steps --guidance --eta --binding-guidance --negative
                    --candidates K --frames --width --height --fps]
    kinema export MODEL_DIR [--vae DECODER_FINE_TUNE --checkpoint CKPT --soup DIR... --keep-verifier --out DIR --steps --guidance --shift --eta --binding-guidance --candidates --dtype fp16
                  --high-noise-expert DIR --expert-boundary T]   (default: the shipped model)
    kinema eval --model DIR --suite shapes-v1 --prompts 100 --videos-per-prompt 2 --out REPORT_DIR
                [--compare OTHER_REPORT --i3d I3D.pt]   (or --report R --compare R2; or --vae DIR ...)
    kinema bench [--model DIR | --preset dit-t] [--repeats 5] [--out bench.json]

Errors a person can fix print one line to stderr and exit 2; `kinema judge` exits 0 when the
video passes and 1 when it fails.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _cmd_synth(a: argparse.Namespace) -> int:
    from .data.synth import SynthSettings, synth_dataset

    s = SynthSettings(a.clips, a.width, a.height, a.frames, a.fps, a.seed, a.crf)
    summary = synth_dataset(a.out, s, workers=a.workers, progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from .data.dataset import fill_metadata, read_metadata, summarise

    if a.fill:
        print(json.dumps(fill_metadata(a.csv, progress=not a.quiet), indent=1))
    print(json.dumps(summarise(read_metadata(a.csv)), indent=1))
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    from .data.video_io import write_video
    from .world import make_clip

    clip = make_clip(a.seed, a.width, a.height, a.frames, a.fps)
    write_video(a.out, clip.frames, a.fps)
    print(json.dumps({"out": a.out, "text": clip.text, "short_text": clip.short_text}))
    if a.ground_truth:
        with open(a.ground_truth, "w") as fh:
            json.dump(clip.ground_truth, fh)
    return 0


def _cmd_judge(a: argparse.Namespace) -> int:
    from .data.video_io import read_video
    from .eval.judge import judge
    from .world.parse import parse_prompt

    claims = parse_prompt(a.prompt)  # a vocabulary error is reported before decoding anything
    verdict = judge(read_video(a.video), claims)
    report = {"video": a.video, **verdict.to_json()}
    text = json.dumps(report, indent=1)
    if a.json_out:
        with open(a.json_out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0 if verdict.passed else 1


def _cmd_train(a: argparse.Namespace) -> int:
    if a.what == "vae":
        from .autoencoder.train import VAETrainConfig, train_vae
        from .config import load_config

        cfg = load_config(VAETrainConfig, a.config, a.set)
        vae = train_vae(cfg, progress=not a.quiet)
        summary = {"out_dir": cfg.out_dir, "steps": cfg.steps, "params": vae.num_params(),
                   "scaling_factor": vae.config.scaling_factor, "shift_factor": vae.config.shift_factor}
    elif a.what == "latents":
        from .train.config import load_dit_train_config
        from .train.dit import cache_pool_latents

        summary = cache_pool_latents(load_dit_train_config(a.config, a.set), progress=not a.quiet)
    else:
        from .train.config import load_dit_train_config
        from .train.dit import train_dit

        summary = train_dit(load_dit_train_config(a.config, a.set), progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from pathlib import Path

    if not a.prompt.strip():
        raise ValueError("the prompt is empty: describe the video you want")
    if a.model is not None and not Path(a.model).is_dir():
        raise FileNotFoundError(f"no model folder at '{a.model}'")
    if not a.out.lower().endswith((".mp4", ".gif", ".mov", ".mkv")):
        raise ValueError(f"--out must end in .mp4, .gif, .mov or .mkv, got '{a.out}'")
    import torch

    from .pipelines import KinemaPipeline, export_to_video
    from .pipelines.pipeline import DEFAULT_MODEL_DIR
    from .text.refine import VOCAB_FILE

    pipe = KinemaPipeline.from_pretrained(a.model)
    d = pipe.defaults
    pick = lambda v, default: default if v is None else v  # noqa: E731  (0 is an answer, not "unset")
    frames, height, width = pick(a.frames, d.num_frames), pick(a.height, d.height), pick(a.width, d.width)
    steps, guidance, eta = pick(a.steps, d.num_inference_steps), pick(a.guidance, d.guidance_scale), pick(a.eta, d.eta)
    binding = pick(a.binding_guidance, d.binding_guidance)
    candidates = pick(a.candidates, pipe.default_candidates)
    pipe.check_inputs(a.prompt, frames, height, width, steps, guidance, eta, binding, candidates)  # before denoising
    result = pipe(a.prompt, negative_prompt=a.negative, num_frames=frames, height=height, width=width,
                  num_inference_steps=steps, guidance_scale=guidance, eta=eta, binding_guidance=binding,
                  num_candidates=candidates,
                  refine_prompt=False if a.no_refine else None,
                  generator=torch.Generator().manual_seed(a.seed), progress=not a.quiet)
    export_to_video(result.frames[0], a.out, fps=pick(a.fps, d.fps))
    untrained = pipe.untrained_words(result.prompts[0])
    if untrained:
        print(f"kinema: the model never trained on {', '.join(repr(w) for w in untrained)} and may not follow "
              f"{'it' if len(untrained) == 1 else 'them'} (the words it knows: {Path(a.model or DEFAULT_MODEL_DIR) / VOCAB_FILE})",
              file=sys.stderr)
    print(json.dumps({"out": a.out, "prompt": a.prompt, "read_as": result.prompts[0], "untrained": untrained,
                      "seed": a.seed, "num_frames": frames, "height": height, "width": width, "steps": steps,
                      "guidance": guidance, "eta": eta, "binding_guidance": binding, "candidates": candidates}))
    return 0


def _shift_arg(value: str) -> float | str:
    """--shift: a number, or "auto" (the token count's shift)."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _cmd_export(a: argparse.Namespace) -> int:
    from .pipelines.pipeline import DEFAULT_MODEL_DIR, export_model

    defaults = {k: v for k, v in (("num_inference_steps", a.steps), ("guidance_scale", a.guidance), ("shift", a.shift),
                                  ("eta", a.eta), ("binding_guidance", a.binding_guidance),
                                  ("num_candidates", a.candidates)) if v is not None}
    if defaults.get("shift") == "auto":
        defaults["shift"] = None  # from the token count at generation time
    out = export_model(a.model, a.out or DEFAULT_MODEL_DIR, a.vae, defaults, a.checkpoint, a.dtype,
                       a.high_noise_expert, a.expert_boundary, a.soup, a.keep_verifier)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({"out": str(out), "megabytes": round(size / 2**20, 2)}))
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from .eval.evaluate import run_command

    print(json.dumps(run_command(vars(a)), indent=1))
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench import BenchSettings, format_result, run_bench, write_result

    s = BenchSettings(model=a.model, preset=a.preset, vae_config=a.vae_config, frames=a.frames, height=a.height,
                      width=a.width, steps=a.steps, guidance=a.guidance, batch=a.batch, vae_batch=a.vae_batch,
                      repeats=a.repeats, device=a.device, precision=a.precision, threads=a.threads,
                      compare=not a.no_compare)
    result = run_bench(s, progress=(lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr)))
    print(format_result(result))
    write_result(result, a.out)
    print(f"saved {a.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kinema", description="Kinema: text-to-video, from data to MP4.")
    p.add_argument("--version", action="version", version=f"kinema {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make and check video data sets").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="write shapes-world clips as MP4 + metadata.csv + ground truth")
    s.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    s.add_argument("--clips", type=int, required=True, help="number of clips")
    s.add_argument("--width", type=int, default=64)
    s.add_argument("--height", type=int, default=64)
    s.add_argument("--frames", type=int, default=17, help="frames a clip (default 17 = 4k+1)")
    s.add_argument("--fps", type=float, default=8.0)
    s.add_argument("--seed", type=int, default=0, help="data set seed; clip i uses a seed derived from it")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    c = data.add_parser("check", help="validate a metadata CSV (yours or synth's) and summarise it")
    c.add_argument("csv", help="path to metadata.csv (columns: path,text[,num_frames,height,width,fps])")
    c.add_argument("--fill", action="store_true", help="decode the videos and write num_frames/height/width/fps")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_cmd_check)

    world = sub.add_parser("world", help="the shapes world").add_subparsers(dest="world_cmd", required=True)
    w = world.add_parser("sample", help="write one clip from a seed and print its captions")
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--out", required=True, help=".mp4 or .gif")
    w.add_argument("--width", type=int, default=64)
    w.add_argument("--height", type=int, default=64)
    w.add_argument("--frames", type=int, default=17)
    w.add_argument("--fps", type=float, default=8.0)
    w.add_argument("--ground-truth", help="also write the clip's ground truth JSON here")
    w.set_defaults(func=_cmd_sample)

    j = sub.add_parser("judge", help="check from pixels whether a video shows its prompt (shapes world)")
    j.add_argument("video")
    j.add_argument("--prompt", required=True)
    j.add_argument("--json-out", help="also write the report to this file")
    j.set_defaults(func=_cmd_judge)

    t = sub.add_parser("train", help="train the autoencoder or the diffusion transformer; `latents` "
                       "encodes a DiT config's world pool into its latent_cache_dir ahead of training")
    t.add_argument("what", choices=["vae", "dit", "latents"])
    t.add_argument("--config", help="TOML config (see configs/); unknown keys are errors")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=200 --set optim.lr=1e-4")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("generate", help="text to video with a trained model")
    g.add_argument("prompt")
    g.add_argument("--out", required=True, help="output video (.mp4 or .gif)")
    g.add_argument("--model", help="model folder (default: the model shipped with Kinema)")
    g.add_argument("--seed", type=int, default=0, help="same seed, same video")
    g.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    g.add_argument("--eta", type=float, help="fresh noise a sampling step, 0 (deterministic Euler) to 1 "
                   "(ancestral); the seed fixes it too (default: the model's)")
    g.add_argument("--binding-guidance", type=float, help="h >= 0: guide two-object prompts away from the same "
                   "prompt with its objects swapped, so each motion stays on its object (0: off; default: the model's)")
    g.add_argument("--candidates", type=int, help="videos sampled; the model's verifier keeps the one it scores "
                   "highest (1: the first sample; default: the model's, 1 without a verifier)")
    g.add_argument("--negative", help="negative prompt: what the video should not show")
    g.add_argument("--frames", type=int, help="number of frames, 4k+1 (default: the model's)")
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--fps", type=float)
    g.add_argument("--no-refine", action="store_true",
                   help="give the DiT the prompt as written (default: words the model never trained on are "
                        "rewritten into the nearest ones it did, docs/default-model.md)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)

    x = sub.add_parser("export", help="copy a trained model folder, generation files only (default: "
                       "to the shipped default model, kinema/weights/default)")
    x.add_argument("model", help="a model folder (what `kinema train dit` writes to OUT/model)")
    x.add_argument("--out", help="destination folder (default: kinema/weights/default)")
    x.add_argument("--vae", help="swap in a decoder fine-tune of the model's autoencoder (same encoder, checked)")
    x.add_argument("--checkpoint", help="take the DiT weights (EMA) from a checkpoint of the same run, "
                   "e.g. runs/default/checkpoints/step_0005000")
    x.add_argument("--steps", type=int, help="new default sampling steps")
    x.add_argument("--guidance", type=float, help="new default guidance scale")
    x.add_argument("--shift", type=_shift_arg, help="new default sampling time shift, or 'auto': from the token count "
                   "at generation time (default: the model's)")
    x.add_argument("--eta", type=float, help="new default share of fresh noise a sampling step (0 Euler, 1 ancestral)")
    x.add_argument("--binding-guidance", type=float, help="new default binding guidance (0: off)")
    x.add_argument("--candidates", type=int, help="new default number of candidates a prompt (needs verifier/)")
    x.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="store the weights in this precision (fp16: half the bytes; loading casts back to fp32)")
    x.add_argument("--high-noise-expert", metavar="DIR", help="a model folder whose DiT (the model's, trained on at "
                   "high noise: train config time_range) runs the sampling steps at t >= --expert-boundary")
    x.add_argument("--expert-boundary", type=float, metavar="T", help="the noise level from which the high-noise "
                   "expert runs (with --high-noise-expert; alone, moves a model's expert boundary)")
    x.add_argument("--soup", nargs="+", metavar="DIR", help="model or run folders of the same DiT (fine-tunes of "
                   "one parent): the exported DiT's weights are the uniform mean of the model's and theirs")
    x.add_argument("--keep-verifier", action="store_true", help="keep the model's verifier though the exported "
                   "DiT changed (soup, checkpoint, dtype), re-stamped for it: measure its picks (default: dropped)")
    x.set_defaults(func=_cmd_export)

    e = sub.add_parser("eval", help="evaluate a model on a prompt suite, or autoencoders (docs/evaluation.md)")
    e.add_argument("--model", help="model folder (default: the model shipped with Kinema)")
    e.add_argument("--report", help="re-render a saved report (folder or report.json) instead of generating")
    e.add_argument("--vae", action="append", metavar="DIR", help="evaluate autoencoder folders by compression "
                   "ratio instead (repeat for several)")
    e.add_argument("--out", required=True, help="report folder: report.json, report.html, gifs/")
    e.add_argument("--suite", help="versioned prompt suite (default shapes-v1)")
    e.add_argument("--prompts", type=int, help="number of prompts from the suite (default 100)")
    e.add_argument("--videos-per-prompt", type=int, help="videos per prompt, each its own seed (default 2)")
    e.add_argument("--width", type=int, help="default: the model's own (64 for --vae)")
    e.add_argument("--height", type=int, help="default: the model's own (64 for --vae)")
    e.add_argument("--frames", type=int, help="default: the model's own (17 for --vae)")
    e.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    e.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    e.add_argument("--eta", type=float, help="fresh noise a sampling step, 0 (Euler) to 1 (ancestral) (default: the model's)")
    e.add_argument("--i3d", help="I3D TorchScript file: report FVD (otherwise the FD-hand substitute)")
    e.add_argument("--gifs", type=int,
                   help="sample GIFs in the report: first video of the first N prompts (default 24)")
    e.add_argument("--compare", help="another report (folder or report.json) to show side by side")
    e.add_argument("--label", help="this model's name in the report (default: the folder name)")
    e.add_argument("--clips", type=int, help="--vae: held-out clips (default 200)")
    e.add_argument("--seed", type=int, help="--vae: held-out world seeds start at 1,000,000,000 + seed (0)")
    e.add_argument("--no-refine", action="store_const", const=True,
                   help="the DiT reads the suite's prompts as written (default: the model's prompt refinement)")
    e.add_argument("--threads", type=int, help="torch threads")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_eval)

    b = sub.add_parser("bench", help="speed and memory per stage, MFU, and vs diffusers (docs/BENCHMARKS.md)")
    b.add_argument("--model", help="model folder; default: random weights of --preset and --vae-config")
    b.add_argument("--preset", default="dit-t", help="DiT preset when no --model (default dit-t)")
    b.add_argument("--vae-config", default="configs/vae-f8t4.toml",
                   help="VAE recipe (TOML with [model]) when no --model; missing: VAEConfig defaults")
    b.add_argument("--frames", type=int, default=17)
    b.add_argument("--height", type=int, default=64)
    b.add_argument("--width", type=int, default=64)
    b.add_argument("--steps", type=int, help="denoising steps for the generation stages (default: the model's)")
    b.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    b.add_argument("--batch", type=int, default=8, help="batch of the denoiser, training and DiT-vs-diffusers runs")
    b.add_argument("--vae-batch", type=int, default=2, help="clips per VAE-vs-diffusers run")
    b.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median), after 1 warm-up")
    b.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    b.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on a GPU, fp32 on CPU")
    b.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    b.add_argument("--no-compare", action="store_true", help="skip the diffusers side-by-side")
    b.add_argument("--out", default="bench.json", help="JSON results (default bench.json)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from .data.dataset import DatasetError
    from .data.video_io import VideoReadError
    from .malloc import tune_malloc

    args = build_parser().parse_args(argv)
    tune_malloc()  # freed tensor memory stays in the heap: generate 13-17 % faster here (kinema/malloc.py)
    try:
        return args.func(args)
    except (ValueError, VideoReadError, DatasetError, FileNotFoundError) as e:  # PromptError, ConfigError too
        print(f"kinema: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kinema: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
