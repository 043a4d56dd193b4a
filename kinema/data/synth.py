"""`kinema data synth`: write shapes-world clips as a video data set on disk.

Layout (the common one, as Open-Sora's CSVs):
    OUT/metadata.csv          path,text,num_frames,height,width,fps,short_text,seed
    OUT/ground_truth.jsonl    one JSON object a clip, keyed by "path"
    OUT/videos/clip_000000.mp4
    OUT/synth.json            the settings, so a rerun resumes instead of mixing data sets

Crash safety: every MP4 is written to a temp file and renamed; a clip is listed in
metadata.csv only after its video and ground truth are on disk, and metadata.csv itself is
replaced atomically (every second and at the end). So whenever the run stops, the CSV lists only
complete clips; rerunning the same command skips them and makes the rest.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from ..world import make_clip
from .dataset import METADATA_COLUMNS, GROUND_TRUTH_FILE, METADATA_FILE, read_metadata, write_csv_atomic
from .video_io import DEFAULT_CRF, write_video

SETTINGS_FILE = "synth.json"


@dataclass(frozen=True)
class SynthSettings:
    clips: int
    width: int = 64
    height: int = 64
    frames: int = 17
    fps: float = 8.0
    seed: int = 0
    crf: int = DEFAULT_CRF

    def same_data(self, other: "SynthSettings") -> bool:
        a, b = asdict(self), asdict(other)
        a.pop("clips"), b.pop("clips")
        return a == b


def clip_seed(seed: int, index: int) -> int:
    """The world seed of clip `index` in a data set made with `seed` (stable, well mixed)."""
    digest = hashlib.blake2b(f"kinema-synth:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _make_one(args: tuple[int, SynthSettings, str]) -> tuple[int, dict, str]:
    index, s, out_dir = args
    seed = clip_seed(s.seed, index)
    clip = make_clip(seed, s.width, s.height, s.frames, s.fps)
    rel = f"videos/clip_{index:06d}.mp4"
    write_video(Path(out_dir) / rel, clip.frames, s.fps, crf=s.crf)
    row = {"path": rel, "text": clip.text, "num_frames": s.frames, "height": s.height, "width": s.width,
           "fps": s.fps, "short_text": clip.short_text, "seed": seed}
    gt = dict(clip.ground_truth, path=rel)
    return index, row, json.dumps(gt, separators=(",", ":"))


def synth_dataset(out_dir: str | os.PathLike, settings: SynthSettings, workers: int | None = None,
                  progress: bool = True) -> dict:
    """Make (or finish) a data set of `settings.clips` clips in out_dir. Returns a summary."""
    s = settings
    if s.clips < 1:
        raise ValueError(f"--clips must be >= 1, got {s.clips}")
    if s.width < 32 or s.height < 32:
        raise ValueError(f"--width and --height must be >= 32, got {s.width}x{s.height}")
    if s.frames < 1 or s.fps <= 0:
        raise ValueError(f"--frames must be >= 1 and --fps > 0, got {s.frames} and {s.fps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / SETTINGS_FILE
    if settings_path.exists():
        old = SynthSettings(**json.loads(settings_path.read_text()))
        if not old.same_data(s):
            raise ValueError(f"'{out}' holds a data set made with other settings ({asdict(old)}); "
                             "use a new --out, or the same settings to resume it")
    settings_path.write_text(json.dumps(asdict(s), indent=1))

    for stale in (out / "videos").glob(".clip_*"):  # temp files of a killed run
        stale.unlink(missing_ok=True)
    rows: dict[int, dict] = {}
    if (out / METADATA_FILE).exists():  # resume: keep every listed clip whose video exists
        for rec in read_metadata(out / METADATA_FILE, check_files=False):
            idx = int(Path(rec.path).stem.rsplit("_", 1)[-1])
            if idx < s.clips and rec.path.is_file():
                rows[idx] = {**rec.row, "path": os.path.relpath(rec.path, out)}
    todo = [i for i in range(s.clips) if i not in rows]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    t0, last_flush = time.perf_counter(), time.perf_counter()

    def flush() -> None:
        write_csv_atomic(out / METADATA_FILE, METADATA_COLUMNS, [rows[i] for i in sorted(rows)])

    gt_file = open(out / GROUND_TRUTH_FILE, "a", encoding="utf-8")
    bar = tqdm(total=s.clips, initial=len(rows), desc="synth", unit="clip", disable=not progress)
    pool = worker_pool(workers) if workers > 1 else None
    # SIGTERM (a scheduler's stop) ends the run like Ctrl-C, through the `finally` below. Set
    # after the pool forks, so the workers keep the default and die quietly on terminate().
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        jobs = ((i, s, str(out)) for i in todo)
        results = pool.imap_unordered(_make_one, jobs, chunksize=8) if pool else map(_make_one, jobs)
        for index, row, gt_line in results:
            gt_file.write(gt_line + "\n")
            gt_file.flush()
            rows[index] = row
            bar.update(1)
            if time.perf_counter() - last_flush > 1.0:
                flush()
                last_flush = time.perf_counter()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        bar.close()
        if pool:
            pool.terminate()
        gt_file.close()
        flush()  # runs on Ctrl-C too: the CSV lists exactly the finished clips
    _compact_ground_truth(out, rows)
    seconds = time.perf_counter() - t0
    return {"out": str(out), "clips": len(rows), "made": len(todo), "seconds": round(seconds, 2),
            "clips_per_second": round(len(todo) / seconds, 1) if seconds > 0 else None, "workers": workers}


def worker_pool(workers: int):
    """A process pool for clip making (synth_dataset, the loader's data.workers): forked where the
    OS can, its workers ignoring Ctrl-C, which reaches the whole process group while the parent
    handles it."""
    return get_context("fork" if os.name == "posix" else "spawn").Pool(workers, initializer=_ignore_sigint)


def _ignore_sigint() -> None:  # Ctrl-C reaches the whole process group; the parent handles it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _compact_ground_truth(out: Path, rows: dict[int, dict]) -> None:
    """Rewrite ground_truth.jsonl with one line a listed clip, in CSV order (drops the repeats
    and any torn last line an interrupted run may have left)."""
    from .dataset import read_ground_truth

    gt = read_ground_truth(out / GROUND_TRUTH_FILE)
    tmp = out / (GROUND_TRUTH_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in sorted(rows):
            line = gt.get(rows[i]["path"])
            if line is not None:
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(tmp, out / GROUND_TRUTH_FILE)


__all__ = ["SynthSettings", "synth_dataset", "clip_seed"]
