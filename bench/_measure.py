"""What the benchmarks measure the same way."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
