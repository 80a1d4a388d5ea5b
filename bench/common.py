"""Timing helpers for the benchmarks: repeat, report median and spread, compare pairs."""
import platform
import statistics
import time


def timed(fn, repeat: int = 5) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def row(label: str, seconds: list[float]) -> str:
    med = statistics.median(seconds)
    return f"{label:<44} median {med * 1000:10.2f} ms   spread {min(seconds) * 1000:.2f}-{max(seconds) * 1000:.2f} ms"


def machine() -> str:
    import os

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def drop_page_cache() -> bool:
    """Empty the OS page cache (root only) so a load reads from disk, as a first load does."""
    import os

    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def timed_cold(fn, repeat: int = 3) -> list[float] | None:
    out = []
    for _ in range(repeat):
        if not drop_page_cache():
            return None
        out += timed(fn, 1)
    return out
