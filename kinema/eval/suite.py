"""Versioned prompt suites and prompt adherence over them, judged per attribute.

    prompts = suite_prompts("shapes-v1", 100)            # deterministic, pinned by a test
    run = run_suite(pipe, prompts, videos_per_prompt=2)  # generate + judge every video
    run.summary()["by_attribute"]["colour"]["rate"]

**shapes-v1** (docs/evaluation.md). Prompt i is a caption of the shapes-world clip with world
seed `2,000,000,000 + i` (`SUITES`), rendered at 64x64x17 with `1 + (i // 2) % 2` objects; even i take
the clip's detailed caption, odd i its short one. So every block of 4 prompts is (detailed,
1 object), (short, 1), (detailed, 2), (short, 2). The seeds lie far from every set the project
trains on (training clips use 63-bit hashed seeds, the autoencoder's held-out clips
1,000,000,000 + i). Video j of prompt i is generated from `torch.Generator().manual_seed(
video_seed(i, j))` = 1000 i + j, so asking for more videos per prompt keeps the first ones.
Anything that changes these rules is a new suite name; `tests/test_eval.py` pins a hash of the
first 100 prompts so a change to the world's captioner cannot slip in silently.

Two variants split the wording (docs/default-model.md): **shapes-v1-trained** draws the same way
from its own seeds but its captions never use `vocab.HELD_OUT_WORDS` (the wording a model
trained with `data.hold_out_wording` has seen: the adherence protocol), and
**shapes-v1-heldout** uses those held-out words wherever a caption can (the generalisation
protocol: the model can follow them only through the pretrained text encoder).

Per-attribute adherence: for each video and each attribute the prompt names (count, background,
and per object colour, shape, size, motion), the video passes the attribute when the judge's
checks of it all pass; a named object the judge could not find fails every attribute it names.
A rate is passing videos over videos whose prompt names the attribute.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..world import make_clip
from ..world.vocab import HELD_OUT_WORDS
from .judge import Verdict, judge

# suite -> (seed base, exclude_words, prefer_words of its captions)
SUITES = {"shapes-v1": (2_000_000_000, (), ()),
          "shapes-v1-trained": (2_010_000_000, HELD_OUT_WORDS, ()),
          "shapes-v1-heldout": (2_020_000_000, (), HELD_OUT_WORDS)}
SUITE_SIZE = (64, 64, 17)  # (width, height, frames) of the clips the captions are taken from
REFERENCE_SEED_OFFSET = 500_000_000  # a second, disjoint real set: the Frechet distance's floor
ATTRIBUTES = ("colour", "shape", "size", "motion", "background", "count")


@dataclass(frozen=True)
class SuitePrompt:
    id: int
    text: str
    kind: str  # "detailed" | "short"
    num_objects: int
    world_seed: int  # the clip the caption describes (the real reference for this prompt)


def check_suite(name: str) -> None:
    if name not in SUITES:
        raise ValueError(f"unknown prompt suite {name!r}; known: {', '.join(SUITES)}")


def suite_prompts(name: str = "shapes-v1", n: int = 100) -> list[SuitePrompt]:
    """The first n prompts of a suite; the same list on every machine."""
    check_suite(name)
    if n < 1:
        raise ValueError(f"the number of prompts must be >= 1, got {n}")
    out = []
    base, exclude, prefer = SUITES[name]
    for i in range(n):
        seed, objects = base + i, 1 + (i // 2) % 2
        clip = make_clip(seed, *SUITE_SIZE, num_objects=objects, exclude_words=exclude, prefer_words=prefer)
        kind = "detailed" if i % 2 == 0 else "short"
        out.append(SuitePrompt(i, clip.text if kind == "detailed" else clip.short_text, kind, objects, seed))
    return out


def suite_hash(prompts: list[SuitePrompt]) -> str:
    return hashlib.sha256("\n".join(p.text for p in prompts).encode()).hexdigest()


def video_seed(prompt_id: int, j: int) -> int:
    """The generator seed of video j of prompt `prompt_id` (independent of how many are asked)."""
    return 1000 * prompt_id + j


def real_clips(prompts: list[SuitePrompt], width: int, height: int, frames: int,
               offset: int = 0) -> list[np.ndarray]:
    """The world clips behind the prompts, at the generation size (offset > 0: a disjoint set
    drawn the same way, e.g. REFERENCE_SEED_OFFSET for the real-vs-real floor)."""
    return [make_clip(p.world_seed + offset, width, height, frames, num_objects=p.num_objects).frames
            for p in prompts]


def attribute_outcomes(verdict: Verdict) -> dict[str, bool]:
    """attribute -> passed, for the attributes the prompt names (see the module docstring)."""
    by_key: dict[tuple, list[bool]] = {}
    for c in verdict.checks:
        by_key.setdefault((c.object, c.attribute), []).append(c.passed)
    out = {"count": all(by_key.get((None, "count"), [False]))}
    if verdict.claims.background:
        out["background"] = all(by_key.get((None, "background"), [False]))
    for n, claim in enumerate(verdict.claims.objects, 1):
        present = all(by_key.get((n, "present"), [False]))
        for attr in claim.attributes():
            ok = present and all(by_key.get((n, attr), [False]))
            out[attr] = out.get(attr, True) and ok
    return out


@dataclass
class VideoResult:
    prompt: SuitePrompt
    index: int  # j: the video's number among its prompt's videos
    seed: int
    frames: np.ndarray  # (T, H, W, 3) uint8
    verdict: Verdict
    seconds: float  # generation time
    read_as: str | None = None  # the prompt as the DiT read it, when refinement rewrote it
    untrained: list[str] = field(default_factory=list)  # words the DiT read that its training never used

    def to_json(self) -> dict:
        return {**asdict(self.prompt), "read_as": self.read_as, "untrained": self.untrained,
                "video": self.index, "seed": self.seed,
                "pass": self.verdict.passed,
                "attributes": attribute_outcomes(self.verdict), "generate_s": round(self.seconds, 3),
                "checks": [{"check": c.check, "attribute": c.attribute, "expected": c.expected,
                            "measured": c.measured, "passed": c.passed} for c in self.verdict.checks]}


def _rates(results: list[VideoResult]) -> dict:
    if not results:
        return {"videos": 0}
    outcomes = [attribute_outcomes(r.verdict) for r in results]
    by_attr = {}
    for a in ATTRIBUTES:
        named = [o[a] for o in outcomes if a in o]
        if named:
            by_attr[a] = {"passed": int(sum(named)), "videos": len(named), "rate": sum(named) / len(named)}
    passed = sum(r.verdict.passed for r in results)
    return {"videos": len(results), "passed": passed, "rate": passed / len(results), "by_attribute": by_attr}


def summarise(results: list[VideoResult]) -> dict:
    """Overall and per-attribute pass rates, also split by object count and caption kind."""
    out = _rates(results)
    out["by_objects"] = {str(k): _rates([r for r in results if r.prompt.num_objects == k]) for k in (1, 2)}
    out["by_kind"] = {k: _rates([r for r in results if r.prompt.kind == k]) for k in ("detailed", "short")}
    # videos whose prompt reached the DiT in trained words only, and those with a word it never saw
    out["by_wording"] = {"trained": _rates([r for r in results if not r.untrained]),
                         "untrained": _rates([r for r in results if r.untrained])}
    return out


@dataclass
class SuiteRun:
    results: list[VideoResult] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return summarise(self.results)


def run_suite(pipe, prompts: list[SuitePrompt], videos_per_prompt: int = 2, num_frames: int | None = None,
              height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, progress: bool = True, eta: float | None = None) -> SuiteRun:
    """Generate `videos_per_prompt` videos of every prompt with `pipe` (a KinemaPipeline or
    anything with its call signature), each from its own seed, and judge each one."""
    import torch
    from tqdm import tqdm

    if videos_per_prompt < 1:
        raise ValueError(f"videos per prompt must be >= 1, got {videos_per_prompt}")
    d = pipe.defaults
    pick = lambda v, default: default if v is None else v  # noqa: E731  (0 is an answer, not "unset")
    settings = {"num_frames": pick(num_frames, d.num_frames), "height": pick(height, d.height),
                "width": pick(width, d.width), "num_inference_steps": pick(num_inference_steps, d.num_inference_steps),
                "guidance_scale": pick(guidance_scale, d.guidance_scale), "eta": pick(eta, d.eta)}
    pipe.check_inputs(prompts[0].text, settings["num_frames"], settings["height"], settings["width"],
                      settings["num_inference_steps"], settings["guidance_scale"], settings["eta"])  # before any denoising
    expert = {"expert_boundary": pipe.expert_boundary} if getattr(pipe, "dit_high", None) is not None else {}
    run = SuiteRun(settings={**settings, "binding_guidance": getattr(d, "binding_guidance", 0.0),  # the model's own
                             "num_candidates": getattr(pipe, "default_candidates", 1),
                             **expert, "videos_per_prompt": videos_per_prompt, "prompts": len(prompts)})
    with tqdm(total=len(prompts) * videos_per_prompt, desc="eval", unit="video", disable=not progress) as bar:
        for p in prompts:
            for j in range(videos_per_prompt):
                seed = video_seed(p.id, j)
                t0 = time.perf_counter()
                out = pipe(p.text, generator=torch.Generator().manual_seed(seed), output_type="uint8",
                           progress=False, **settings)
                seconds = time.perf_counter() - t0
                read_as = (getattr(out, "prompts", None) or [p.text])[0]  # the judge reads the prompt as written
                untrained = pipe.untrained_words(read_as) if hasattr(pipe, "untrained_words") else []
                run.results.append(VideoResult(p, j, seed, np.asarray(out.frames[0]), judge(out.frames[0], p.text),
                                               seconds, read_as if read_as != p.text else None, untrained))
                bar.update(1)
    return run
