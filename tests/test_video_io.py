"""Video files: MP4 (H.264) and GIF round trips, inputs diffusers users pass, clear read errors."""
import numpy as np
import pytest

from kinema.data.video_io import VideoReadError, read_video, read_video_info, to_uint8_frames, write_video
from kinema.world import make_clip


@pytest.fixture(scope="module")
def frames():
    return make_clip(3).frames  # (17, 64, 64, 3)


def test_mp4_round_trip(tmp_path, frames):
    path = write_video(tmp_path / "a.mp4", frames, fps=8)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - frames.astype(int))
    assert err.mean() < 4  # H.264 is lossy: ~2/255 at crf 18 on these clips
    info = read_video_info(path)
    assert (info.num_frames, info.height, info.width, info.fps) == (17, 64, 64, 8.0)


def test_gif_round_trip_is_exact_for_flat_colours(tmp_path, frames):
    back = read_video(write_video(tmp_path / "a.gif", frames, fps=8))
    assert np.array_equal(back, frames)


@pytest.mark.parametrize("size", [(47, 33), (64, 96), (32, 32)])
def test_any_size_including_odd(tmp_path, size):
    h, w = size
    clip = make_clip(1, w, h, 5)
    assert read_video(write_video(tmp_path / "v.mp4", clip.frames, fps=8)).shape == (5, h, w, 3)


def test_single_frame_video(tmp_path, frames):
    assert read_video(write_video(tmp_path / "one.mp4", frames[:1])).shape == (1, 64, 64, 3)


def test_accepts_float_lists_and_tensors(tmp_path, frames):
    as_float = frames.astype(np.float32) / 255.0
    assert np.array_equal(to_uint8_frames(as_float), frames)
    assert np.array_equal(to_uint8_frames(list(frames)), frames)
    torch = pytest.importorskip("torch")
    assert np.array_equal(to_uint8_frames(torch.from_numpy(frames)), frames)
    write_video(tmp_path / "t.mp4", list(as_float), fps=8)
    assert read_video(tmp_path / "t.mp4").shape == frames.shape


def test_bad_write_arguments(tmp_path, frames):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "a.mp4", frames[..., 0])
    with pytest.raises(ValueError, match=".mp4"):
        write_video(tmp_path / "a.avi", frames)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", frames, fps=0)
    with pytest.raises(ValueError, match="empty"):
        write_video(tmp_path / "a.mp4", frames[:0])


def test_write_is_atomic(tmp_path, frames):
    write_video(tmp_path / "a.mp4", frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temp file left behind


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing"])
def test_unreadable_files_raise_one_clear_error(tmp_path, frames, kind):
    good = write_video(tmp_path / "good.mp4", frames).read_bytes()
    path = tmp_path / f"{kind}.mp4"
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoReadError, match=f"{kind}.mp4"):
        read_video(path)


def test_mp4_re_encode_decodes_to_nearly_the_same_frames(tmp_path, frames):
    """x264 may pick other bits for the same frames (docs/shapes-world.md), never other content."""
    a = read_video(write_video(tmp_path / "a.mp4", frames)).astype(int)
    b = read_video(write_video(tmp_path / "b.mp4", frames)).astype(int)
    assert np.abs(a - b).mean() < 1.0
