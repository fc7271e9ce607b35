"""Process ids on this machine: is the process we mean still alive? Written once, for the store's
staging folders (resources/store.py) and for judging runs (run_health.py); imports no Dagster.

A pid alone can name another process once the first one has ended (pids are reused), so a check
can carry the time the process was known to exist: a process with that pid started later is not
the one we look for. A zombie (ended, not yet reaped) counts as gone.
"""

from __future__ import annotations

import os
from pathlib import Path


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None without /proc (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": the name may hold spaces


def process_start_time(pid: int) -> float | None:
    """When `pid` started (epoch seconds), or None where /proc cannot tell."""
    fields = _stat_fields(pid)
    boot = _boot_time()
    if fields is None or boot is None:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks


def process_alive(pid: int, not_started_after: float | None = None) -> bool:
    """Whether `pid` is a live process, and (given `not_started_after`, epoch seconds) one that
    already existed then, not a newer process that reuses the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: the signal test is all we have
    if fields[0] in ("Z", "X"):
        return False
    if not_started_after is None:
        return True
    started = process_start_time(pid)
    return started is None or started <= not_started_after + 1.0  # 1 s: the tick rounding of both clocks
