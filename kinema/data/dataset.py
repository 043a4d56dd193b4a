"""The video data set format: a metadata CSV beside (or pointing at) the videos.

One format for the shapes world and for a user's own videos, so one loader reads both:

    path,text,num_frames,height,width,fps[,short_text,seed,...]
    videos/clip_000000.mp4,"A small red circle moving right on a gray background.",17,64,64,8.0,...

`path` and `text` are required; a relative path is relative to the CSV's folder. The other
columns are Open-Sora's names; `kinema data check --fill` measures and writes them for a
folder of real videos. Extra columns are kept and passed through.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .video_io import VideoReadError, read_video_info

METADATA_FILE = "metadata.csv"
GROUND_TRUTH_FILE = "ground_truth.jsonl"
METADATA_COLUMNS = ["path", "text", "num_frames", "height", "width", "fps", "short_text", "seed"]
REQUIRED_COLUMNS = ("path", "text")
NUMERIC = {"num_frames": int, "height": int, "width": int, "fps": float, "seed": int}


class DatasetError(ValueError):
    """A metadata CSV that cannot be used, with the file and row named."""


@dataclass
class VideoRecord:
    path: Path  # absolute
    text: str
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    short_text: str | None = None
    row: dict = field(default_factory=dict)  # the CSV row as written (all columns)


def write_csv_atomic(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write a CSV to a temp file and rename it over `path`: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    extra = [c for r in rows[:1] for c in r if c not in columns]
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns + extra, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_metadata(csv_path: str | os.PathLike, check_files: bool = True) -> list[VideoRecord]:
    """Read a metadata CSV; with check_files, every listed video must exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"no metadata CSV at '{csv_path}'")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"'{csv_path}' lacks the column(s) {missing}; it needs at least "
                               f"{list(REQUIRED_COLUMNS)} (and may have {METADATA_COLUMNS[2:]})")
        records = []
        for line, row in enumerate(reader, start=2):
            if not row.get("path") or row.get("text") is None:
                raise DatasetError(f"'{csv_path}' line {line}: empty path or text")
            p = Path(row["path"])
            rec = VideoRecord(p if p.is_absolute() else (csv_path.parent / p).resolve(), row["text"],
                              short_text=row.get("short_text") or None, row=dict(row))
            for col, typ in NUMERIC.items():
                val = row.get(col)
                if val not in (None, ""):
                    try:
                        if hasattr(rec, col):
                            setattr(rec, col, typ(float(val)) if typ is int else typ(val))
                    except ValueError:
                        raise DatasetError(f"'{csv_path}' line {line}: {col}={val!r} is not a number") from None
            records.append(rec)
    if check_files:
        absent = [str(r.path) for r in records if not r.path.is_file()]
        if absent:
            raise DatasetError(f"{len(absent)} video(s) listed in '{csv_path}' do not exist, e.g. {absent[:3]}")
    return records


def fill_metadata(csv_path: str | os.PathLike, progress: bool = True) -> dict:
    """Decode every listed video and write num_frames/height/width/fps into the CSV (in place,
    atomically). Unreadable videos are reported, not listed. Returns a summary."""
    csv_path = Path(csv_path)
    records = read_metadata(csv_path)
    rows, bad = [], []
    for rec in tqdm(records, desc="probe", unit="video", disable=not progress):
        try:
            info = read_video_info(rec.path)
        except VideoReadError as e:
            bad.append(str(e))
            continue
        rows.append({**rec.row, "num_frames": info.num_frames, "height": info.height,
                     "width": info.width, "fps": round(info.fps, 3)})
    columns = METADATA_COLUMNS[:6] + [c for c in (rows[0] if rows else {}) if c not in METADATA_COLUMNS[:6]]
    write_csv_atomic(csv_path, columns, rows)
    return {"csv": str(csv_path), "videos": len(rows), "dropped_unreadable": bad}


def summarise(records: list[VideoRecord]) -> dict:
    """Counts by (frames, height, width): the buckets a trainer would form."""
    buckets: dict[str, int] = {}
    for r in records:
        key = f"{r.num_frames}x{r.height}x{r.width}" if r.num_frames else "unknown (run --fill)"
        buckets[key] = buckets.get(key, 0) + 1
    return {"videos": len(records), "buckets": dict(sorted(buckets.items(), key=lambda kv: -kv[1]))}


def read_ground_truth(path: str | os.PathLike) -> dict[str, dict]:
    """ground_truth.jsonl as {path: record}; a torn last line (an interrupted run) is skipped."""
    out: dict[str, dict] = {}
    p = Path(path)
    if not p.exists():
        return out
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[rec["path"]] = rec
    return out
