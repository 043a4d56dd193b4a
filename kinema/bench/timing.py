"""Timing and memory primitives for `kinema bench`.

- `interleaved`: every function once per round, rounds repeated, so a shared and noisy machine
  slows all contenders alike (the machine notes measured +-15 % run to run); medians reported.
- `StageMemory`: peak memory per named stage. CUDA: the allocator's peak
  (`max_memory_allocated`) above what was allocated when the stage began. CPU: peak resident set
  size above the stage's starting RSS, sampled every 0.5 ms by a thread, with freed heap handed
  back to the OS (glibc `malloc_trim`) at every stage boundary so the baseline is honest. It is run
  as a separate pass, never while timing.
- `matmul_peak`: this machine's achieved peak FLOP/s on a large square matmul, the denominator
  of MFU (nanoGPT reports MFU against the datasheet peak; there is no datasheet for a shared VM).
"""
from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in rounds (A B A B ...) after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(timed(fn, device))
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is only less tight
        pass


class StageMemory:
    """with StageMemory(device) as mem: mem.mark("text_encode"); ...; mem.mark("denoise"); ...
    then mem.peaks: stage -> peak bytes above the stage's start (max over its visits)."""

    def __init__(self, device: torch.device, interval_s: float = 0.0005):
        self.device, self.interval = device, interval_s
        self.peaks: dict[str, int] = {}
        self._stage: str | None = None
        self._base = self._high = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cpu = device.type != "cuda" and os.path.exists("/proc/self/statm")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            with self._lock:
                self._high = max(self._high, rss)

    def _close_stage(self) -> None:
        if self._stage is None:
            return
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._cpu:
            with self._lock:
                peak = max(self._high, _rss_bytes()) - self._base
        else:
            peak = 0
        self.peaks[self._stage] = max(self.peaks.get(self._stage, 0), int(peak))

    def mark(self, stage: str | None) -> None:
        """End the current stage and start `stage` (None: stop measuring)."""
        self._close_stage()
        self._stage = stage
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._cpu:
            _trim()
            with self._lock:
                self._base = self._high = _rss_bytes()

    def __enter__(self) -> StageMemory:
        if self._cpu:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.mark(None)
        if self._cpu:
            self._stop.set()
            self._thread.join()


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes above the starting point while fn runs (one call)."""
    with StageMemory(device) as mem:
        mem.mark("run")
        fn()
    return mem.peaks["run"]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """Achieved FLOP/s of an n x n matmul (median of `repeats`): 2 n^3 flops a call."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = interleaved({"mm": lambda: a @ b}, repeats, device, warmup=2)["mm"]
    return 2 * n ** 3 / median(times)
