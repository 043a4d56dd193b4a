"""Keep glibc's malloc from handing tensor memory back to the OS between ops (CPU runs).

PyTorch's CPU allocator is plain malloc. glibc serves every block above its mmap threshold
(128 KiB at start) with a fresh mmap and unmaps it on free, so a tensor of a few MB (a small DiT's
activations on a CPU are 0.5-15 MB each) costs a system call and a page fault per 4 KiB page each
time it is made. The threshold does grow as such blocks are freed, but glibc also trims the top of
its heap back to the OS whenever 128 KiB lie free there, so the pages fault in again next step.
`tune_malloc()` raises the mmap threshold to glibc's 64-bit maximum (32 MiB) and the trim
threshold to 1 GiB, with 64 MiB of top pad: freed blocks stay in the heap for the next op. This is
what PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc, done in-process with
`mallopt`. Measured on the 2-core AVX2 machine: `kinema generate` of the default video, four
candidates, 7.90 s against 9.05 s untuned (benchmarks/generate_speed.py --malloc both; with one
candidate no difference, 4.87 against 4.76 s). The cost: the process keeps its peak heap
until it exits, which a command line run does not mind.

The `kinema` command calls it first; a Python program using KinemaPipeline may call it itself.
KINEMA_MALLOC=default leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc malloc.h
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))


def tune_malloc() -> bool:
    """Apply SETTINGS with glibc's mallopt; True when every one took. False (nothing changed) off
    Linux, without glibc (musl), or when KINEMA_MALLOC=default."""
    if os.environ.get("KINEMA_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no libc to load, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
