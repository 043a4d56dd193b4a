"""`kinema data synth` and the metadata CSV: layout, resume, interruption, a user's own videos."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kinema.data.dataset import DatasetError, fill_metadata, read_ground_truth, read_metadata, summarise
from kinema.data.synth import SynthSettings, clip_seed, synth_dataset
from kinema.data.video_io import read_video, write_video
from kinema.eval.judge import judge
from kinema.world import make_clip


def test_layout_columns_and_ground_truth(tmp_path):
    s = SynthSettings(clips=12, width=96, height=64, frames=9, fps=6, seed=3)
    summary = synth_dataset(tmp_path, s, workers=2, progress=False)
    assert summary["clips"] == 12 and summary["made"] == 12
    with open(tmp_path / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames[:6] == ["path", "text", "num_frames", "height", "width", "fps"]
    assert "short_text" in reader.fieldnames and len(rows) == 12
    gt = read_ground_truth(tmp_path / "ground_truth.jsonl")
    assert set(gt) == {r["path"] for r in rows}
    for i, r in enumerate(rows):
        assert r["path"] == f"videos/clip_{i:06d}.mp4"
        assert (int(r["num_frames"]), int(r["height"]), int(r["width"]), float(r["fps"])) == (9, 64, 96, 6.0)
        clip = make_clip(int(r["seed"]), 96, 64, 9, 6)  # a row's seed regenerates its clip exactly
        assert int(r["seed"]) == clip_seed(3, i) and clip.text == r["text"] and clip.short_text == r["short_text"]
        assert gt[r["path"]]["objects"] == clip.ground_truth["objects"]
    frames = read_video(tmp_path / rows[0]["path"])
    assert frames.shape == (9, 64, 96, 3) and judge(frames, rows[0]["text"]).passed


def test_rerun_resumes_and_matches_a_fresh_run(tmp_path):
    s = SynthSettings(clips=10, seed=5)
    synth_dataset(tmp_path / "a", SynthSettings(clips=4, seed=5), workers=1, progress=False)
    resumed = synth_dataset(tmp_path / "a", s, workers=2, progress=False)
    assert resumed["made"] == 6 and resumed["clips"] == 10
    synth_dataset(tmp_path / "b", s, workers=2, progress=False)
    a, b = (read_metadata(tmp_path / d / "metadata.csv") for d in "ab")
    assert [r.row for r in a] == [r.row for r in b]
    for ra, rb in zip(a, b):  # same clips; the H.264 bits may differ (docs/shapes-world.md)
        assert np.abs(read_video(ra.path).astype(int) - read_video(rb.path).astype(int)).mean() < 1.0
    again = synth_dataset(tmp_path / "a", s, workers=2, progress=False)
    assert again["made"] == 0


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    synth_dataset(tmp_path, SynthSettings(clips=2), workers=1, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        synth_dataset(tmp_path, SynthSettings(clips=2, width=96), workers=1, progress=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_lists_only_complete_files(tmp_path, sig):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "kinema", "data", "synth", "--out", str(out),
                             "--clips", "20000", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metadata.csv").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    rows = list(csv.DictReader(open(out / "metadata.csv", newline="")))
    assert 0 < len(rows) < 20000
    for r in rows:  # every listed video is whole: it decodes to all its frames
        assert read_video(out / r["path"]).shape[0] == 17
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    summary = synth_dataset(out, SynthSettings(clips=len(rows) + 5), workers=2, progress=False)
    assert summary["clips"] == len(rows) + 5
    assert not [p for p in (out / "videos").iterdir() if p.name.startswith(".")]


def test_users_own_videos_through_the_same_csv(tmp_path):
    """A folder of real videos needs only path,text; --fill measures the rest."""
    rng = np.random.default_rng(0)
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "noise.mp4", rng.integers(0, 255, (9, 48, 80, 3), dtype=np.uint8), fps=12)
    write_video(tmp_path / "clips" / "flat.mp4", np.full((5, 64, 64, 3), 90, np.uint8), fps=24)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text('path,text,source\nclips/noise.mp4,"static noise",cam1\n'
                        f'{tmp_path}/clips/flat.mp4,a gray wall,cam2\nclips/broken.mp4,oops,cam3\n')
    recs = read_metadata(csv_path)
    assert recs[0].path == (tmp_path / "clips" / "noise.mp4").resolve() and recs[0].num_frames is None
    result = fill_metadata(csv_path, progress=False)
    assert result["videos"] == 2 and "broken.mp4" in result["dropped_unreadable"][0]
    recs = read_metadata(csv_path)
    assert [(r.num_frames, r.height, r.width, r.fps) for r in recs] == [(9, 48, 80, 12.0), (5, 64, 64, 24.0)]
    assert recs[0].row["source"] == "cam1"  # extra columns are kept
    assert summarise(recs)["buckets"] == {"9x48x80": 1, "5x64x64": 1}


def test_bad_csvs_are_named(tmp_path):
    with pytest.raises(DatasetError, match="no metadata CSV"):
        read_metadata(tmp_path / "nope.csv")
    (tmp_path / "a.csv").write_text("file,caption\nx.mp4,hi\n")
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['path', 'text'\]"):
        read_metadata(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,text\nmissing.mp4,hi\n")
    with pytest.raises(DatasetError, match="do not exist"):
        read_metadata(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,text,num_frames\nx.mp4,hi,many\n")
    with pytest.raises(DatasetError, match="line 2: num_frames='many'"):
        read_metadata(tmp_path / "c.csv", check_files=False)


def test_synth_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="--clips"):
        synth_dataset(tmp_path, SynthSettings(clips=0), progress=False)
    with pytest.raises(ValueError, match=">= 32"):
        synth_dataset(tmp_path, SynthSettings(clips=1, width=16), progress=False)
    assert list(tmp_path.iterdir()) == []  # rejected before anything was written
