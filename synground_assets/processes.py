"""Process ids on this machine: is the process we mean still alive? Written once, for the store's
staging folders (resources/store.py) and for judging runs (run_health.py); and the record of a
training job's processes, which Dagster does not see. Imports no Dagster.

A pid alone can name another process once the first one has ended (pids are reused), so a check
can carry the time the process was known to exist: a process with that pid started later is not
the one we look for. A zombie (ended, not yet reaped) counts as gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
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


# -- the training job's processes -------------------------------------------------------------------
# torchrun starts each rank in a session of its own, so killing the step's process group misses the
# ranks: each rank records itself and its launcher (torchrun) where `run_health` finds them, and
# exits as soon as its launcher is gone.
REGISTRY_FOLDER = "synground_processes"  # under the Dagster instance's folder ($DAGSTER_HOME)
EXIT_LAUNCHER_GONE = 75  # a rank's exit code when its launcher died under it


def registry_folder(instance_home: str | os.PathLike, run_id: str) -> Path:
    """Where the extra processes of one run (a training job's launcher and ranks) are recorded."""
    return Path(instance_home) / REGISTRY_FOLDER / run_id


def record_process(folder: Path, pid: int, kind: str) -> Path:
    """One JSON file per process: pid, host, start time (so that a reused pid is not taken for it), kind."""
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    entry = {"pid": pid, "host": host, "started": process_start_time(pid) or time.time(), "kind": kind}
    path = folder / f"{host}-{pid}.json"
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(entry))
    os.replace(staging, path)  # a reader sees a whole entry or none
    return path


def recorded_processes(folder: Path) -> list[dict]:
    entries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # removed meanwhile
            continue
    return entries


def exit_when_parent_dies(poll_s: float = 1.0) -> threading.Thread:
    """Exit this process (code EXIT_LAUNCHER_GONE) within `poll_s` of its parent's death: the parent
    of a rank is torchrun, and a rank whose torchrun was killed would otherwise train on, unseen."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:  # re-parented: the launcher is gone
                print(f"pid {os.getpid()}: its launcher (pid {parent}) is gone; exiting", file=sys.stderr, flush=True)
                os._exit(EXIT_LAUNCHER_GONE)

    thread = threading.Thread(target=watch, name="exit-when-parent-dies", daemon=True)
    thread.start()
    return thread


def guard_training_process(run_id: str | None) -> None:
    """What each rank of a training job calls first: record this rank and its launcher under the Dagster
    instance (`$DAGSTER_HOME`) for the run `run_id`, so that the run's cleanup ends them, and exit when
    the launcher dies. A job run by hand (no run id, no instance) only gets the exit."""
    home = os.environ.get("DAGSTER_HOME")
    if home and run_id:
        folder = registry_folder(home, run_id)
        record_process(folder, os.getppid(), "training launcher")
        record_process(folder, os.getpid(), "training rank")
    exit_when_parent_dies()
