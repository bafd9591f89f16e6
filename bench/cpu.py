"""What the whole machine spent: every process's share, servers included."""

from __future__ import annotations

import os


def machine_busy_s() -> float:
    """CPU-seconds all cores have spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")
