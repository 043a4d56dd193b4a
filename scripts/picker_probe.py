"""How much more can best-of-K picking give? (docs/default-model.md, session 31: little.)

The pipeline's best-of-K makes a prompt's K candidates in one batch from the video's generator;
`pipe([prompt] * K, num_candidates=1)` with that generator makes the same K, so `candidates`
decodes and judges every one of them (not only the one the verifier keeps). `report` then scores
them with the model's verifier and with the scene reader's per-claim log p, and prints how many
prompts pass with each way of picking, against the first candidate and the best possible:

    python scripts/picker_probe.py candidates kinema/weights/default --first 200 --prompts 200 \\
        --objects 2 --batches 2 --out runs/picker/tune.pt        # the tuning prompts, 2 batches of 4
    python scripts/picker_probe.py candidates kinema/weights/default --first 2200 --prompts 500 \\
        --objects 2 --out runs/picker/fit.pt                     # prompts no verifier was fitted on
    python scripts/picker_probe.py report kinema/weights/default --eval runs/picker/tune.pt \\
        --fit runs/picker/fit.pt

`report`: the verifier's pick in each batch; best of 2K (both batches); adaptive K (a second batch
only where the first batch's best score is low); the reader's claims alone; and logistic
regressions over the verifier's logit and the reader's features, fitted on `--fit`'s candidates
and scored on `--eval`'s. `--reencode`: the reader also reads each candidate as the video shows it
(decoded, rounded to 8 bits, encoded again: the encoder's latents are what the reader learned on). `candidates` appends and skips finished batches, so it resumes.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from kinema.data.loader import from_model_range, to_model_range
from kinema.eval.judge import judge
from kinema.eval.suite import attribute_outcomes, suite_prompts, video_seed
from kinema.models.reader import CLAIMS, attribute_features
from kinema.models.verifier import VerifierConfig, fit_verifier
from kinema.pipelines import KinemaPipeline
from train_verifier import features_of  # scripts/: the verifier's features of sampled rows


def candidates(pipe: KinemaPipeline, prompt, batch: int, K: int) -> list[dict]:
    """Prompt `prompt`'s batch `batch`: the K candidates pipe(prompt, num_candidates=K) would choose
    among with generator video_seed(id, batch), each judged."""
    out = pipe([prompt.text] * K, generator=torch.Generator().manual_seed(video_seed(prompt.id, batch)),
               output_type="uint8", progress=False, num_candidates=1)
    rows = []
    for k in range(K):
        verdict = judge(out.frames[k], prompt.text)
        rows.append({"id": prompt.id, "b": batch, "k": k, "prompt": prompt.text, "read_as": out.prompts[k],
                     "pass": verdict.passed, "attrs": attribute_outcomes(verdict), "z": out.latents[k].clone()})
    return rows


def collect(a) -> None:
    path = Path(a.out)
    rows = torch.load(path, weights_only=False) if path.is_file() else []
    done = {(r["id"], r["b"]) for r in rows}
    pipe = KinemaPipeline.from_pretrained(a.model)
    todo = [(p, b) for p in suite_prompts(a.suite, a.first + a.prompts)[a.first:] if p.num_objects in a.objects
            for b in range(a.batches) if (p.id, b) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for n, (p, b) in enumerate(todo, 1):
        rows += candidates(pipe, p, b, a.K)
        if n % 10 == 0 or n == len(todo):
            torch.save(rows, path)
            print(f"[{n}/{len(todo)} batches, {time.time() - t0:.0f}s] {len(rows)} candidates, "
                  f"{sum(r['pass'] for r in rows) / len(rows):.1%} pass", flush=True)


def reencoded(pipe: KinemaPipeline, z: torch.Tensor) -> torch.Tensor:
    """Latents (B, C, T', h, w) as the written video shows them: decoded, 8-bit, encoded again."""
    frames = from_model_range(pipe.vae.decode(pipe.vae.denormalize(z.float())))  # (B, F, H, W, 3) uint8
    return pipe.vae.normalize(pipe.vae.encode(torch.stack([to_model_range(f) for f in frames])).mode())


@torch.no_grad()
def features(pipe: KinemaPipeline, rows: list[dict], batch: int = 8, reencode: bool = False) -> dict[str, torch.Tensor]:
    """The verifier's logit (N,) and the reader's attribute features (N, len(CLAIMS)) of each
    candidate; with `reencode`, also "reread": the reader's features of the re-encoded candidate."""
    ver, attr, reread = pipe.verifier, [], []
    if ver is None or ver.reader is None:
        raise SystemExit("this model has no verifier with a scene reader (scripts/train_verifier.py fits one)")
    logit = ver(features_of(pipe, rows, ver.cfg, ver.reader, batch))
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        prompts, z = [r["read_as"] for r in part], torch.stack([r["z"] for r in part])
        attr.append(attribute_features(ver.reader, z, prompts))
        if reencode:
            reread.append(attribute_features(ver.reader, reencoded(pipe, z), prompts))
    return {"logit": logit, "attr": torch.cat(attr), **({"reread": torch.cat(reread)} if reencode else {})}


def picked(rows: list[dict], score: torch.Tensor, batches=None) -> int:
    """Prompts whose highest-scored candidate (over `batches`, default each prompt's first) passes."""
    by = defaultdict(list)
    for r, s in zip(rows, score.tolist()):
        if r["b"] in (batches or (0,)):
            by[r["id"]].append((s, -r["k"], r["pass"]))
    return sum(max(c)[2] for c in by.values())


def report(a) -> None:
    pipe = KinemaPipeline.from_pretrained(a.model)
    rows = torch.load(a.eval, weights_only=False)
    f = features(pipe, rows, reencode=a.reencode)
    ids, batches = sorted({r["id"] for r in rows}), sorted({r["b"] for r in rows})
    passes = defaultdict(list)
    for r in rows:
        passes[(r["id"], r["b"])].append(r["pass"])
    print(f"{len(ids)} prompts, {len(rows)} candidates ({len(batches)} batches of {len(passes[(ids[0], 0)])})")
    for b in batches:
        print(f"batch {b}: first {sum(passes[(i, b)][0] for i in ids)}, the verifier's pick "
              f"{picked(rows, f['logit'], (b,))}, any {sum(any(passes[(i, b)]) for i in ids)}")
    if len(batches) > 1:
        print(f"all batches: the verifier's pick {picked(rows, f['logit'], batches)}, "
              f"any {sum(any(p for b in batches for p in passes[(i, b)]) for i in ids)}")
        best = {i: max(s for r, s in zip(rows, f["logit"].tolist()) if r["id"] == i and r["b"] == 0) for i in ids}
        for q in (0.2, 0.4):
            tau = torch.tensor(list(best.values())).quantile(q).item()
            low = {i for i in ids if best[i] < tau}
            score = torch.tensor([s if r["b"] == 0 or r["id"] in low else -1e9 for r, s in zip(rows, f["logit"].tolist())])
            print(f"adaptive: batch 1 too where batch 0's best scores below {tau:.2f} ({len(low)} prompts): "
                  f"{picked(rows, score, batches)}")
    print("the reader alone: sum of claims " + str(picked(rows, f["attr"].sum(1))) + ", worst claim "
          + str(picked(rows, f["attr"].min(1).values)) + ", "
          + ", ".join(f"{n} {picked(rows, f['attr'][:, k])}" for k, n in enumerate(CLAIMS)))
    if a.reencode:
        every = tuple(batches)
        print("the reader on re-encoded candidates: sum of claims " + str(picked(rows, f["reread"].sum(1))) +
              ", worst claim " + str(picked(rows, f["reread"].min(1).values)) + "; the verifier + w x that sum, "
              + ", ".join(f"w {w}: {picked(rows, f['logit'] + w * f['reread'].sum(1))}"
                          f" ({picked(rows, f['logit'] + w * f['reread'].sum(1), every)} over all batches)"
                          for w in (0.3, 1, 3)))
    if a.fit:
        train = torch.load(a.fit, weights_only=False)
        g = features(pipe, train)
        y = torch.tensor([r["pass"] for r in train])
        for name, cols in (("logit", lambda d: d["logit"][:, None]), ("reader", lambda d: d["attr"]),
                           ("logit + reader", lambda d: torch.cat([d["logit"][:, None], d["attr"]], 1))):
            for l2 in (0.0, 0.01, 0.1):
                head = fit_verifier(cols(g).detach(), y, VerifierConfig(l2=l2))  # the verifier's own head fit
                print(f"fitted on {len(train)} --fit candidates, {name}, l2 {l2}: pick {picked(rows, head(cols(f).detach()))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("candidates", help="the pipeline's candidates of suite prompts, each decoded and judged")
    c.add_argument("model", nargs="?")
    c.add_argument("--out", required=True)
    c.add_argument("--suite", default="shapes-v1-trained")
    c.add_argument("--first", type=int, default=200, help="prompt ids first .. first + prompts (the test: 0-199)")
    c.add_argument("--prompts", type=int, default=200)
    c.add_argument("--objects", type=int, nargs="+", default=[1, 2])
    c.add_argument("--batches", type=int, default=1, help="batches (generator seeds) a prompt")
    c.add_argument("--K", type=int, default=4, help="candidates a batch")
    r = sub.add_parser("report", help="how each way of picking does on the candidates")
    r.add_argument("model", nargs="?")
    r.add_argument("--eval", required=True, help="a candidates file to score")
    r.add_argument("--fit", help="a candidates file to fit the logistic pickers on")
    r.add_argument("--reencode", action="store_true", help="the reader also reads the decoded, re-encoded candidates")
    for p in (c, r):
        p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if a.stage == "candidates" and a.first < 200:
        raise SystemExit("--first must be >= 200: prompts 0-199 are the adherence test's")
    torch.set_num_threads(a.threads)
    {"candidates": collect, "report": report}[a.stage](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
