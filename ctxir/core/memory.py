"""Keep freed memory inside the process (glibc): large CPU tensors otherwise cost a page fault per 4 KiB.

PyTorch's CPU allocator returns every tensor to ``malloc``. glibc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB) with fresh ``mmap`` calls and gives freed heap tops back to the kernel
(trim threshold), so the (M, 512) activations of a training step are faulted in and zeroed by the kernel
page by page on every step. Raising both thresholds keeps that memory in the heap for reuse. Measured with
``benchmarks/bench_nn.py`` on the 2-core CPU (``full step`` against ``full step, freed memory retained``): the
paper's per-GPU training step (encoder + both decoders, 4 × 10,240 points, 4 × 50,000 queries) ran 11.8 s
against 4.1 s; the encoder alone about 10–20 % faster. The price: the process keeps its peak memory (resident
set 5.4 → 6.7 GiB in that step) until it exits.

The ``ctxir`` command and ``python -m ctxir.reproduce`` call :func:`retain_freed_memory` at start; in a notebook
call it yourself. ``CTXIR_RETAIN_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "CTXIR_RETAIN_FREED_MEMORY"
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 1 << 28}
"""Blocks up to 1 GiB come from the heap, freed memory is never trimmed, the heap grows 256 MiB at a time."""


def retain_freed_memory() -> bool:
    """Apply :data:`SETTINGS` with glibc's ``mallopt``; ``True`` if every setting took effect.

    A no-op (``False``) off Linux, with another C library (no ``mallopt``), or when ``CTXIR_RETAIN_FREED_MEMORY``
    is ``0``. It changes only how ``malloc`` recycles memory, never a computed value."""
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
