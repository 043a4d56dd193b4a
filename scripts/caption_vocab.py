"""Write a model folder's training vocabulary (caption_vocab.json: words and word pairs) from the
training config whose data it was trained on: what `kinema train dit` writes by itself into
OUT/model, for a folder made before it did (the shipped default model) or exported by hand.

    python scripts/caption_vocab.py configs/default-gpu.toml kinema/weights/default

The prompt refiner (kinema/text/refine.py) rewrites words outside this vocabulary into words in
it. Counting a 24,000-clip world pool's captions takes about a minute on one core.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import closing
from pathlib import Path

from kinema.data.loader import VideoBatches
from kinema.pipelines.pipeline import INDEX_FILE
from kinema.text.refine import caption_tables, save_vocabulary
from kinema.train.config import load_dit_train_config
from kinema.train.dit import vocabulary_source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="the DiT training config (TOML) whose [data] the model trained on")
    p.add_argument("model", help="the model folder to write caption_vocab.json into")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    a = p.parse_args(argv)
    if not (Path(a.model) / INDEX_FILE).is_file():
        raise SystemExit(f"caption_vocab: '{a.model}' is not a model folder (no {INDEX_FILE})")
    cfg = load_dit_train_config(a.config, a.set)
    t0 = time.perf_counter()
    with closing(VideoBatches(cfg.data, cfg.batch_size)) as data:
        texts = list(data.training_captions())
    counts, pairs = caption_tables(texts)
    path = save_vocabulary(a.model, counts, vocabulary_source(cfg), pairs)
    print(json.dumps({"out": str(path), "words": len(counts), "pairs": len(pairs),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
