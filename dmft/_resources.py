"""How much memory one device may use: the one estimate every cost check shares."""

from __future__ import annotations

import os

import jax


def available_memory_bytes() -> float:
    """Bytes one device may use now: its free memory on accelerators, else this process's share
    (1 / device count) of the host's available memory (MemAvailable, else physical memory)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats (CPU)
        stats = None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: line.split()[1] for line in handle}
        total = float(info["MemAvailable"]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return total / len(jax.devices())
