"""How often the judge agrees with the truth: the shapes-world issue's two judge bars.

For N fresh clips (random seeds, half at 64x64 and half at 96x64, after an H.264 MP4 round
trip), judge each against
  1. its own detailed and short captions: every check should pass;
  2. another clip's caption that states something false about it: the verdict should fail, and
     name an attribute that really differs.
  3. (harder) its own detailed caption with exactly one attribute changed: colour, shape, size,
     motion, background, or one of two objects left out (count).
"States something false" is decided exactly: the same checks run on the clip's ground truth
(`observe_ground_truth`) must fail. A caption that only differs in what it does not mention
(a short caption without size, say) is not false about the clip, so it is not a mismatch.

    python benchmarks/judge_accuracy.py --clips 1000 --seed 2026 [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from kinema.data.video_io import read_video, write_video
from kinema.eval.judge import judge_observation, observe_ground_truth
from kinema.eval.measure import measure_video
from kinema.world import make_clip, parse_prompt, vocab
from kinema.world.parse import PromptClaims


def one_change(claims: PromptClaims, attribute: str, rng: random.Random) -> PromptClaims | None:
    """The claims with one attribute of one object (or the background / count) changed."""
    c = copy.deepcopy(claims)
    o = rng.choice(c.objects)
    used = {x.colour for x in c.objects}
    if attribute == "colour":
        o.colour = rng.choice([k for k in vocab.OBJECT_COLOURS if k not in used])
    elif attribute == "shape":
        o.shape = rng.choice([k for k in vocab.SHAPE_WORDS if k != o.shape])
        if o.shape == "circle" and o.motion == "spinning":
            return None
    elif attribute == "size":
        o.size = "small" if o.size == "big" else "big"
    elif attribute == "motion":
        o.motion = rng.choice([m for m in vocab.MOTIONS if m != o.motion
                               and not (o.shape == "circle" and m == "spinning")])
        o.speed = None
    elif attribute == "background":
        c.background = rng.choice([k for k in vocab.BACKGROUNDS if k != c.background])
    elif attribute == "count":
        if len(c.objects) < 2:
            return None
        c.objects.remove(o)
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026, help="draws the clips' seeds")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    seeds = [rng.getrandbits(62) for _ in range(a.clips)]
    sizes = [(64, 64) if i % 2 == 0 else (96, 64) for i in range(a.clips)]
    clips = [make_clip(s, w, h) for s, (w, h) in zip(seeds, sizes)]
    own = collections.Counter()
    own_fail_attr = collections.Counter()
    mism = collections.Counter()
    single = collections.Counter()
    examples = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        for i, clip in enumerate(clips):
            write_video(path, clip.frames, clip.scene.fps)
            obs = measure_video(read_video(path))
            truth = observe_ground_truth(clip.ground_truth)
            for kind, caption in (("detailed", clip.text), ("short", clip.short_text)):
                v = judge_observation(obs, caption)
                own[f"{kind} judged"] += 1
                own[f"{kind} passed"] += v.passed
                for c in v.failed():
                    own_fail_attr[c.attribute] += 1
                if not v.passed and len(examples) < 5:
                    examples.append({"seed": clip.scene.seed, "caption": caption,
                                     "failed": [(c.check, c.expected, c.measured) for c in v.failed()]})
            # Another clip's caption (same canvas size) that is false about this clip.
            for _ in range(50):
                j = rng.randrange(a.clips)
                if j == i or sizes[j] != sizes[i]:
                    continue
                other = clips[j]
                caption = other.text if rng.random() < 0.5 else other.short_text
                gt_verdict = judge_observation(truth, caption)
                if gt_verdict.passed:
                    continue  # not false about this clip: draw again
                v = judge_observation(obs, caption)
                differing = {c.attribute for c in gt_verdict.failed()}
                mism["pairs"] += 1
                mism["failed"] += not v.passed
                mism["named a differing attribute"] += bool(differing & {c.attribute for c in v.failed()})
                break
            for attribute in ("colour", "shape", "size", "motion", "background", "count"):
                changed = one_change(parse_prompt(clip.text), attribute, rng)
                if changed is None or judge_observation(truth, changed).passed:
                    continue
                v = judge_observation(obs, changed)
                single[f"{attribute} pairs"] += 1
                single[f"{attribute} failed"] += not v.passed
                single[f"{attribute} named"] += attribute in {c.attribute for c in v.failed()}
            if (i + 1) % 100 == 0:
                print(f"  {i + 1}/{a.clips} clips", file=sys.stderr)
    seconds = time.perf_counter() - t0
    judged = own["detailed judged"] + own["short judged"]
    passed = own["detailed passed"] + own["short passed"]
    fig = {
        "clips": a.clips, "sizes": ["64x64", "96x64"], "seconds": round(seconds, 1),
        "own_caption_pass_rate": passed / judged,
        "own_detailed_pass_rate": own["detailed passed"] / own["detailed judged"],
        "own_short_pass_rate": own["short passed"] / own["short judged"],
        "own_failed_checks_by_attribute": dict(own_fail_attr),
        "mismatch_pairs": mism["pairs"],
        "mismatch_fail_rate": mism["failed"] / max(1, mism["pairs"]),
        "mismatch_names_differing_attribute_rate": mism["named a differing attribute"] / max(1, mism["pairs"]),
        "one_attribute_changed": {
            k: {"pairs": single[f"{k} pairs"], "fail_rate": single[f"{k} failed"] / max(1, single[f"{k} pairs"]),
                "names_it_rate": single[f"{k} named"] / max(1, single[f"{k} pairs"])}
            for k in ("colour", "shape", "size", "motion", "background", "count")},
        "own_failure_examples": examples,
    }
    print(json.dumps(fig, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
