"""Preference fine-tuning of a model's DiT on its own judged videos: Flow-DPO (docs/training.md).

Diffusion-DPO (Wallace et al. 2023) for rectified flow (Flow-DPO: Liu et al. 2025): from a
prompt's candidates that the world's judge passed (w) and failed (l), the DiT is trained to lower
its flow error on w relative to a frozen copy of itself more than on l (`flow.flow_dpo_loss`).
Unlike training on the passing videos alone (RAFT, session 17: worse), what w and l share (how the
model draws) cancels; what tells them apart (which object does what) is what is learned.

    # candidates: the pipeline's own K = 4 of prompts no evaluation uses (ids >= 400), judged
    python scripts/picker_probe.py candidates kinema/weights/default --first 400 --prompts 1000 \\
        --objects 2 --out runs/dpo/cands.pt
    # fine-tune on every (pass, fail) pair within a prompt -> runs/dpo/model (a model folder)
    python scripts/flow_dpo.py kinema/weights/default --samples runs/dpo/cands.pt --out runs/dpo

Rows are those `picker_probe.py candidates` and `train_verifier.py sample` write ("id", "read_as",
"pass", "z": the sampler's normalised latent). The model folder written is the input's with the
DiT replaced (fp16); its verifier was fitted on the old DiT, so the pipeline ignores it (one
candidate) unless `--keep-verifier` re-stamps it for the new DiT (an approximation for probing:
refit it with train_verifier.py to ship). Deterministic for a seed; a run is short, so it does not
resume.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from kinema import flow
from kinema.pipelines import KinemaPipeline
from kinema.pipelines.pipeline import (CONFIG_NAME, DEFAULT_MODEL_DIR, VERIFIER_DIR, WEIGHTS_NAME, _cast_weights,
                                       restamp_verifier, save_dit)
from kinema.train.dit import ema_update, sample_generator
from train_verifier import FIRST_UNUSED  # scripts/: prompts below it are the test's and tuning's


def preference_pairs(rows: list[dict]) -> list[tuple[int, int]]:
    """(w, l) row indices: every passing and failing candidate of the same prompt, in row order."""
    by_prompt = defaultdict(list)
    for i, r in enumerate(rows):
        if r["id"] < FIRST_UNUSED:
            raise ValueError(f"row {i}: prompt id {r['id']} is an evaluation prompt's (ids < {FIRST_UNUSED})")
        by_prompt[(r["id"], r["read_as"])].append(i)
    pairs = []
    for idx in by_prompt.values():
        won = [i for i in idx if rows[i]["pass"]]
        lost = [i for i in idx if not rows[i]["pass"]]
        pairs += list(itertools.product(won, lost))
    return pairs


def finetune(dit: torch.nn.Module, encode, rows: list[dict], pairs: list[tuple[int, int]], a,
             log=None) -> torch.nn.Module:
    """`dit` trained a.steps steps on `pairs` of `rows` by Flow-DPO against a frozen copy of itself;
    returns the trained module (its EMA with a.ema > 0). encode(texts) -> (states, mask)."""
    model = dit.float().train()
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if a.ema > 0 else None
    texts = sorted({rows[i]["read_as"] for p in pairs for i in p})
    states, mask = encode(texts)  # the conditioning the sampler used: its (refined) prompt
    text_row = {t: n for n, t in enumerate(texts)}
    z = torch.stack([r["z"].float() for r in rows])  # (N, C, T', h, w)
    tokens = math.prod(s // p for s, p in zip(z.shape[2:], model.cfg.patch_size))
    shift = a.time_shift or flow.timestep_shift_for(tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    order = random.Random(a.seed)
    t0, recent = time.time(), []
    for step in tqdm(range(a.steps), desc="flow-dpo", unit="step", disable=log is None):
        w, l = (torch.tensor(col) for col in zip(*(pairs[order.randrange(len(pairs))] for _ in range(a.batch))))
        x0 = torch.cat([z[w], z[l]])  # (2B, C, T', h, w): winners, then losers
        which = torch.tensor([text_row[rows[i]["read_as"]] for i in w.tolist()]).repeat(2)
        s, m = states[which], mask[which]
        noise = torch.stack([torch.randn(z.shape[1:], generator=sample_generator(a.seed, step, g, "noise"))
                             for g in range(a.batch)]).repeat(2, 1, 1, 1, 1)  # the same noise for w and l
        t = torch.cat([flow.sample_timesteps(1, sample_generator(a.seed, step, g, "t"), shift=shift,
                                             t_range=a.time_range) for g in range(a.batch)]).repeat(2)  # same t
        xt = flow.interpolate(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            with torch.no_grad():
                ref_w, ref_l = flow.flow_errors(ref(xt, t, s, m), x0, noise).chunk(2)
            err_w, err_l = flow.flow_errors(model(xt, t, s, m), x0, noise).chunk(2)
        loss, margin = flow.flow_dpo_loss(err_w, err_l, ref_w, ref_l, a.beta)
        if a.sft > 0:  # keep the winners' own error down (DPO alone may raise both errors)
            loss = loss + a.sft * err_w.mean()
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema_update(ema, model, a.ema)
        recent.append({"loss": loss.item(), "acc": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
                       "dw": (err_w - ref_w).mean().item(), "dl": (err_l - ref_l).mean().item()})
        if log is not None and ((step + 1) % a.log_every == 0 or step + 1 == a.steps):
            row = {"step": step + 1, "s": round(time.time() - t0, 1),
                   **{k: sum(r[k] for r in recent) / len(recent) for k in recent[0]}}
            recent = []
            log.write(json.dumps(row) + "\n")
            log.flush()
            tqdm.write(" ".join(f"{k} {v:.4g}" for k, v in row.items()))
    return (ema if ema is not None else model).eval()


def train(a) -> None:
    torch.set_num_threads(a.threads)
    rows = [r for path in a.samples for r in torch.load(path, weights_only=False)]
    pairs = preference_pairs(rows)
    if not pairs:
        raise SystemExit("no prompt has both a passing and a failing candidate: nothing to prefer")
    src = Path(a.model) if a.model else DEFAULT_MODEL_DIR
    pipe = KinemaPipeline.from_pretrained(src)
    print(f"{len(rows)} candidates, {len(pairs)} pairs over {len({rows[w]['id'] for w, _ in pairs})} prompts; "
          f"beta {a.beta}, lr {a.lr}, batch {a.batch}, {a.steps} steps", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "log.jsonl", "w") as log:
        dit = finetune(pipe.dit, pipe.text_encoder.encode, rows, pairs, a, log)
    folder = out / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(src, folder)
    save_dit(dit, dit.cfg, folder / "dit")
    _cast_weights(folder / "dit" / WEIGHTS_NAME, torch.float16)
    if (folder / VERIFIER_DIR / CONFIG_NAME).is_file() and a.keep_verifier:
        restamp_verifier(folder)  # the old head re-stamped for the new DiT: a probe, not a fit
    (out / "args.json").write_text(json.dumps(vars(a), indent=1))
    print(f"wrote {folder} ({time.time() - t0:.0f}s)")


def time_range(text: str) -> tuple[float, float]:
    """--time-range LO:HI, checked as the sampler of training times checks it (flow.check_time_range)."""
    try:
        return flow.check_time_range(text.split(":"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a model folder (default: the shipped model)")
    ap.add_argument("--samples", nargs="+", required=True, help="judged candidates (picker_probe / train_verifier)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16, help="pairs a step")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--beta", type=float, default=2000.0)
    ap.add_argument("--sft", type=float, default=0.0, help="weight of the winners' plain flow loss")
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--time-shift", type=float, default=3.0, help="training times' shift (0: from the token count)")
    ap.add_argument("--time-range", type=time_range, metavar="LO:HI",
                    help="train at noise levels in [LO, HI] only (default: all)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on some CPUs)")
    ap.add_argument("--keep-verifier", action="store_true",
                    help="re-stamp the input's verifier for the new DiT (a probe: refit it to ship)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    train(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
