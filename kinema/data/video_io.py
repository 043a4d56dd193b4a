"""Read and write videos as uint8 frames shaped (T, H, W, 3).

MP4 (H.264) goes through PyAV: FFmpeg's libraries in-process, with libx264 inside the PyPI
wheel, so there is no 165 MB ffmpeg binary (imageio-ffmpeg) and no subprocess per clip; a 64x64
clip round-trips in ~0.02 s. GIF goes through Pillow, whose adaptive palette keeps the flat
colours of the shapes world exact. Reading accepts anything FFmpeg decodes (mp4, webm, mkv, avi,
mov, gif). Any failure to read is one VideoReadError that names the file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

H264_CONTAINERS = {".mp4", ".mov", ".mkv"}
DEFAULT_CRF = 18  # visually lossless for x264; ~2x the bytes of the default 23, half its error


class VideoReadError(RuntimeError):
    """A file that is missing, empty, truncated, or not a video."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    height: int
    width: int
    fps: float


def to_uint8_frames(frames) -> np.ndarray:
    """Accept (T, H, W, 3) uint8 or float in [0, 1] arrays or tensors, or a list of frames/PIL
    images (what diffusers' export_to_video takes); return a contiguous uint8 (T, H, W, 3)."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames])
    if hasattr(frames, "detach"):  # torch tensor, without importing torch here
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be shaped (T, H, W, 3), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError("frames is empty: a video needs at least one frame")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def write_video(path: str | os.PathLike, frames, fps: float = 8.0, crf: int = DEFAULT_CRF,
                preset: str = "medium") -> Path:
    """Write frames to an .mp4/.mov/.mkv (H.264) or .gif file, atomically (temp file + rename),
    so a reader never sees a half-written video. Returns the path."""
    path = Path(path)
    arr = to_uint8_frames(frames)
    ext = path.suffix.lower()
    if ext not in H264_CONTAINERS | {".gif"}:
        raise ValueError(f"cannot write '{path}': use .mp4, .mov, .mkv or .gif")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        if ext == ".gif":
            _write_gif(tmp, arr, fps)
        else:
            _write_h264(tmp, arr, fps, crf, preset)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_h264(path: str, arr: np.ndarray, fps: float, crf: int, preset: str) -> None:
    import av

    T, H, W, _ = arr.shape
    with av.open(path, mode="w") as container:
        rate = Fraction(fps).limit_denominator(1000)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = W, H
        stream.codec_context.time_base = 1 / rate
        # 4:2:0 plays everywhere but needs even sizes; odd sizes fall back to 4:4:4.
        stream.pix_fmt = "yuv420p" if W % 2 == 0 and H % 2 == 0 else "yuv444p"
        stream.options = {"crf": str(crf), "preset": preset}
        for i, frame in enumerate(arr):
            # Convert to YUV here, explicitly. Note: the same frames do not always give the same
            # bytes: libx264 in PyAV's wheel varied with the process's memory state (measured;
            # docs/shapes-world.md). Exact reproducibility lives in the generator's pixels.
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=stream.pix_fmt)
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode())  # flush


def _write_gif(path: str, arr: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in arr]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0, disposal=1)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as uint8 (T, H, W, 3)."""
    return _decode(Path(path))[0]


def read_video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and fps of a video (decodes it: frame counts in headers can lie)."""
    arr, fps = _decode(Path(path))
    return VideoInfo(arr.shape[0], arr.shape[1], arr.shape[2], fps)


def _decode(path: Path) -> tuple[np.ndarray, float]:
    if not path.is_file():
        raise VideoReadError(f"cannot read video '{path}': no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"cannot read video '{path}': the file is empty")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"cannot read video '{path}': it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except VideoReadError:
        raise
    except (av.FFmpegError, ValueError, EOFError, IndexError, OSError) as e:
        raise VideoReadError(f"cannot read video '{path}': {e}") from e
    if not frames:
        raise VideoReadError(f"cannot read video '{path}': it holds no decodable frame (truncated?)")
    return np.stack(frames), float(rate) if rate else 0.0
