"""`kinema bench`: speed and memory of generation per stage, denoiser throughput and MFU, training
samples/s, and our DiT / VAE against diffusers' Wan models of the same size, in one run.

    kinema bench [--model DIR | --preset dit-t --vae-config configs/vae-f8t4.toml] [--repeats 5]

Every time is the median of `repeats` runs after one warm-up; contenders are timed in alternating
rounds (timing.py). Memory is measured in a separate pass. CPU runs in fp32 and a GPU in bf16
autocast unless --precision says otherwise. Results print as a table and are saved as JSON.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__, flow
from ..train.optim import OptimConfig, make_adamw
from .timing import StageMemory, interleaved, matmul_peak, median, peak_memory, sync, timed


@dataclass
class BenchSettings:
    model: str | None = None  # a model folder (KinemaPipeline); None: random weights from the two below
    preset: str = "dit-t"
    vae_config: str | None = "configs/vae-f8t4.toml"  # TOML with a [model] table; None or missing: defaults
    frames: int = 17
    height: int = 64
    width: int = 64
    steps: int | None = None  # denoising steps (None: the model's default)
    guidance: float | None = None
    batch: int = 8  # denoiser throughput, training step, DiT side-by-side
    vae_batch: int = 2  # VAE side-by-side
    repeats: int = 5
    device: str | None = None  # None: cuda if available, else cpu
    precision: str | None = None  # fp32 | bf16; None: bf16 on a GPU, fp32 on CPU
    threads: int | None = None
    compare: bool = True  # the diffusers side-by-side

    def check(self) -> None:
        for name in ("frames", "height", "width", "batch", "vae_batch", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.precision not in (None, "fp32", "bf16"):
            raise ValueError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.model is not None and not Path(self.model).is_dir():
            raise FileNotFoundError(f"no model folder at '{self.model}'")


def build_pipeline(s: BenchSettings, device: torch.device):
    """The pipeline to bench: a model folder, or random weights of a preset and a VAE recipe."""
    from ..autoencoder import CausalVideoVAE, VAEConfig
    from ..config import from_dict, read_toml
    from ..models.dit import DiT, dit_config
    from ..pipelines import KinemaPipeline
    from ..pipelines.pipeline import PipelineDefaults
    from ..text import load_text_encoder

    if s.model is not None:
        return KinemaPipeline.from_pretrained(s.model, device=device), f"model folder {s.model}"
    vae_cfg, source = VAEConfig(), "VAEConfig() defaults"
    if s.vae_config and Path(s.vae_config).is_file():
        vae_cfg, source = from_dict(VAEConfig, read_toml(s.vae_config).get("model", {})), s.vae_config
    torch.manual_seed(0)
    vae = CausalVideoVAE(vae_cfg)
    text = load_text_encoder("minilm", max_length=32)
    dit = DiT(dit_config(s.preset, in_channels=vae.latent_channels, text_dim=text.dim))
    pipe = KinemaPipeline(vae.to(device), dit.to(device), text,
                          PipelineDefaults(num_frames=s.frames, height=s.height, width=s.width))
    return pipe, f"random weights: {s.preset} + VAE from {source}"


@contextlib.contextmanager
def _stage_hooks(pipe, device: torch.device, times: dict, mem: StageMemory | None):
    """Time text encoding and decoding inside one pipe() call by wrapping the two components
    (instance attributes, removed afterwards); denoising is the rest of the call."""
    def wrap(name, fn, after):
        def inner(*args, **kwargs):
            if mem is not None:
                mem.mark(name)
            sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            if mem is not None:
                mem.mark(after)
            return out
        return inner

    pipe.text_encoder.encode = wrap("text_encode", pipe.text_encoder.encode, "denoise")
    pipe.vae.decode = wrap("decode", pipe.vae.decode, None)
    try:
        yield
    finally:
        del pipe.text_encoder.encode, pipe.vae.decode


def stage_times(pipe, device: torch.device, generate) -> dict:
    """Seconds of one `generate()` call by stage: text_encode, decode (timed inside the call),
    denoise (the rest) and total."""
    times: dict = {}
    with _stage_hooks(pipe, device, times, None):
        total = timed(generate, device)
    return {**times, "denoise": total - sum(times.values()), "total": total}


def bench_generation(pipe, s: BenchSettings, device: torch.device, autocast) -> dict:
    """Latency and peak memory per stage of generating one video (CFG: the DiT runs batch 2)."""
    prompt = "a small red circle moving right on a gray background"
    d = pipe.defaults
    steps = s.steps if s.steps is not None else d.num_inference_steps
    guidance = s.guidance if s.guidance is not None else d.guidance_scale

    def generate():
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            pipe(prompt, num_frames=s.frames, height=s.height, width=s.width, num_inference_steps=steps,
                 guidance_scale=guidance, generator=torch.Generator().manual_seed(0), progress=False)

    runs = [stage_times(pipe, device, generate) for _ in range(1 + s.repeats)][1:]  # the first is the warm-up
    with StageMemory(device) as mem, _stage_hooks(pipe, device, {}, mem):
        generate()
    out = {"steps": steps, "guidance": guidance, "video": [s.frames, s.height, s.width]}
    for stage in ("text_encode", "denoise", "decode", "total"):
        out[stage] = {"s": median([r[stage] for r in runs])}
        if stage in mem.peaks:
            out[stage]["peak_mb"] = mem.peaks[stage] / 2 ** 20
    out["denoise"]["s_per_step"] = out["denoise"]["s"] / steps
    return out


def _latent(pipe, s: BenchSettings) -> tuple[int, int, int]:
    ts, ss = pipe.vae.temporal_stride, pipe.vae.spatial_stride
    return (s.frames - 1) // ts + 1, s.height // ss, s.width // ss


def bench_denoiser(pipe, s: BenchSettings, device: torch.device, autocast, peak_flops: float) -> dict:
    """DiT forward (no grad) and one training step (forward, flow loss, backward, clip, AdamW) at
    `batch` samples: tokens/s, samples/s, achieved FLOP/s and MFU against the matmul peak."""
    dit = pipe.dit
    cfg, latent, L = dit.cfg, _latent(pipe, s), pipe.text_encoder.max_length
    B = s.batch
    tokens = math.prod(n // p for n, p in zip(latent, cfg.patch_size))
    fwd_flops = dit.flops_per_sample(latent, L)
    x = torch.randn(B, cfg.in_channels, *latent, device=device)
    noise, t = torch.randn_like(x), torch.rand(B, device=device)
    text = torch.randn(B, L, cfg.text_dim, device=device)
    ctx = lambda: torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)  # noqa: E731
    opt = make_adamw(dit.parameters(), OptimConfig(lr=1e-5))  # as training makes it

    @torch.no_grad()
    def forward():
        with ctx():
            dit(x, t, text)

    def train_step():
        with ctx():
            pred = dit(flow.interpolate(x, noise, t), t, text)
        loss = flow.flow_loss(pred.float(), x, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0, foreach=True)
        opt.step()

    state = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    dit.eval()
    fwd = median(interleaved({"f": forward}, s.repeats, device)["f"])
    dit.train()
    step = median(interleaved({"s": train_step}, s.repeats, device)["s"])
    train_mem = peak_memory(train_step, device)
    dit.load_state_dict(state)  # leave the model as it was
    dit.eval()
    return {"batch": B, "latent": list(latent), "tokens_per_sample": tokens, "text_len": L,
            "params": dit.num_params(), "fwd_gflops_per_sample": fwd_flops / 1e9,
            "forward": {"s": fwd, "tokens_per_s": B * tokens / fwd, "flops_per_s": B * fwd_flops / fwd,
                        "mfu": B * fwd_flops / fwd / peak_flops},
            "train_step": {"s": step, "samples_per_s": B / step, "flops_per_s": 3 * B * fwd_flops / step,
                           "mfu": 3 * B * fwd_flops / step / peak_flops, "peak_mb": train_mem / 2 ** 20}}


def run_bench(s: BenchSettings, progress=print) -> dict:
    """The whole bench; returns the JSON-ready result (see docs/BENCHMARKS.md)."""
    from ..eval.evaluate import machine
    from .versus import compare_dit, compare_vae, have_diffusers

    s.check()
    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if s.threads:
        torch.set_num_threads(s.threads)
    precision = s.precision or ("bf16" if device.type == "cuda" else "fp32")
    autocast = torch.bfloat16 if precision == "bf16" else None
    pipe, source = build_pipeline(s, device)
    pipe.check_inputs("x", s.frames, s.height, s.width, 1, 1.0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    progress("matmul peak ...")
    peak = matmul_peak(device, dtype, repeats=s.repeats)
    result = {"kind": "kinema-bench", "kinema_version": __version__,
              "created": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "device": str(device), "threads": torch.get_num_threads(), "precision": precision,
              "settings": asdict(s), "models": source, "matmul_peak_tflops": peak / 1e12}
    progress("generation stages ...")
    result["generation"] = bench_generation(pipe, s, device, autocast)
    progress("denoiser throughput and training step ...")
    result["denoiser"] = bench_denoiser(pipe, s, device, autocast, peak)
    if s.compare:
        why = have_diffusers()
        if why:
            result["versus_diffusers"] = {"skipped": why}
        else:
            progress("our DiT vs diffusers WanTransformer3DModel ...")
            dit_cmp = compare_dit(pipe.dit, s.batch, _latent(pipe, s), pipe.text_encoder.max_length, s.repeats,
                                  device, autocast)
            progress("our VAE vs diffusers AutoencoderKLWan ...")
            vae_cmp = compare_vae(pipe.vae, s.vae_batch, s.frames, s.height, s.width, s.repeats, device, autocast)
            result["versus_diffusers"] = {"dit": dit_cmp, "vae": vae_cmp}
    return result


def format_result(r: dict) -> str:
    g, d = r["generation"], r["denoiser"]
    lines = [f"kinema bench: {r['models']}; {r['device']} ({r['threads']} threads), {r['precision']}; {r['machine']}",
             f"matmul peak: {r['matmul_peak_tflops'] * 1e3:.1f} GFLOP/s",
             f"generate 1 video {'x'.join(map(str, g['video']))}, {g['steps']} steps, guidance {g['guidance']} "
             f"(median of {r['settings']['repeats']}):"]
    for stage in ("text_encode", "denoise", "decode", "total"):
        mem = f"   peak {g[stage]['peak_mb']:.0f} MB" if "peak_mb" in g[stage] else ""
        lines.append(f"  {stage:<12} {g[stage]['s'] * 1e3:9.1f} ms{mem}")
    f, t = d["forward"], d["train_step"]
    lines += [f"denoiser ({d['params'] / 1e6:.2f} M params), batch {d['batch']} x {d['tokens_per_sample']} tokens:",
              f"  forward      {f['s'] * 1e3:9.1f} ms   {f['tokens_per_s']:,.0f} tokens/s   "
              f"{f['flops_per_s'] / 1e9:.1f} GFLOP/s   MFU {100 * f['mfu']:.1f}%",
              f"  train step   {t['s'] * 1e3:9.1f} ms   {t['samples_per_s']:.1f} samples/s   "
              f"{t['flops_per_s'] / 1e9:.1f} GFLOP/s   MFU {100 * t['mfu']:.1f}%   peak {t['peak_mb']:.0f} MB"]
    v = r.get("versus_diffusers")
    if v is not None and "skipped" in v:
        lines.append(f"versus diffusers: skipped ({v['skipped']})")
    elif v is not None:
        for key, name in (("dit", "DiT"), ("vae", "VAE")):
            c = v[key]
            if "skipped" in c:
                lines.append(f"  {name} vs diffusers: skipped ({c['skipped']})")
                continue
            lines.append(f"{name} {c['what']} vs {c['diffusers_model']} ({c['ours_params'] / 1e6:.2f} M vs "
                         f"{c['diffusers_params'] / 1e6:.2f} M params, batch {c['batch']}): ours "
                         f"{c['ours_s'] * 1e3:.1f} ms, diffusers {c['diffusers_s'] * 1e3:.1f} ms, "
                         f"ratio {c['ratio']:.3f}")
    return "\n".join(lines)


def write_result(r: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(r, indent=1) + "\n")
    os.replace(tmp, path)
    return path
