"""Returning a build's freed memory to the OS between its stages."""

from __future__ import annotations

import ctypes

_malloc_trim = None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``) between a build's
    stages. Once glibc's mmap threshold has grown, the large blocks a stage frees stay in
    its heap and are counted in RSS through the next stages: 40-110 MB of a 1M-token
    build's peak (benchmarks/RESULTS.md, build growth). A no-op where there is no glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
            _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
