"""Process ids on this machine: is the process we mean still alive? Written once, for the store's
staging folders (resources/store.py) and for judging runs (ops/run_health.py); and the record of a
training job's processes, which Dagster does not see. Imports no Dagster.

A pid alone can name another process once the first one has ended (pids are reused), so a check
can carry the time the process was known to exist: a process with that pid started later is not
the one we look for. A zombie (ended, not yet reaped) counts as gone.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from synground_assets.config import settings


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


def exit_when_parent_dies(poll_s: float = 1.0, parent: int | None = None) -> threading.Thread:
    """Exit this process (code EXIT_LAUNCHER_GONE) within `poll_s` of its parent's death: the parent
    of a rank is torchrun, and a rank whose torchrun was killed would otherwise train on, unseen.
    (The fallback where `die_with_parent` has no prctl; on Linux the kernel is faster.)"""
    parent = parent or os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:  # re-parented: the launcher is gone
                print(f"pid {os.getpid()}: its launcher (pid {parent}) is gone; exiting", file=sys.stderr, flush=True)
                os._exit(EXIT_LAUNCHER_GONE)
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name="exit-when-parent-dies", daemon=True)
    thread.start()
    return thread


def guard_training_process(run_id: str | None, working_folder: str | os.PathLike | None = None) -> None:
    """What each rank of a training job calls first: die with its launcher (torchrun), record this rank
    and its launcher under the Dagster instance (`$DAGSTER_HOME`) for the run `run_id`, so that the
    run's cleanup ends them, and hold a shared lock on the working folder as long as it lives, so that
    no new job starts there beside it (`lock_working_folder`). A job run by hand (no run id, no
    instance) gets the exit and the lock only."""
    launcher = int(settings.launcher_pid() or 0) or None
    die_with_parent()
    parent = os.getppid()
    if launcher and parent != launcher:  # torchrun died before the line above: no signal will come
        print(f"pid {os.getpid()}: its launcher (pid {launcher}) is gone; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_LAUNCHER_GONE)
    home = os.environ.get("DAGSTER_HOME")
    if home and run_id:
        folder = registry_folder(home, run_id)
        record_process(folder, parent, "training launcher")
        record_process(folder, os.getpid(), "training rank")
    if working_folder is not None:
        hold_rank_lock(Path(working_folder))
    exit_when_parent_dies(parent=parent)


# -- a training job dies with the step that launched it, and has its working folder alone ---------------
# The step (a Dagster step process) starts `python -m synground_assets.ops.launcher`, which asks the kernel
# for SIGKILL when the step dies (prctl PR_SET_PDEATHSIG, kept across exec), takes the working folder's
# job lock and execs torchrun, whose pid it is; each rank asks for SIGKILL when torchrun dies and holds
# the folder's rank lock shared. Killing the step alone (kill -9 of its pid, not its group) left torchrun
# and its ranks training to the end, beside the rerun in the same folder.
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LAUNCHER_PID_ENV = settings.LAUNCHER_PID_ENV  # torchrun's pid, for its ranks (set by the launcher)
JOB_LOCK = ".training.lock"  # held exclusive by the launcher, then by torchrun (the same pid, after exec)
RANK_LOCK = ".ranks.lock"  # held shared by every rank
EXIT_FOLDER_IN_USE = 73  # the launcher's exit code when another job holds the working folder
_held_locks: list[int] = []  # a rank's lock descriptors, open for its lifetime


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (the thread that started it) ends;
    False where there is no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return True


class FolderInUseError(RuntimeError):
    """A training job's working folder is held by another job's processes; the message names them."""


def lock_holders(path: Path) -> list[int]:
    """The pids holding a lock on `path`, from /proc/locks (matched by inode: on overlay file systems
    the device there is not stat's); [] where that cannot be read."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = set()
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 4242 00:2e:131 0 EOF"; a waiter's line has "->"
        fields = line.split()
        if "->" not in fields and len(fields) >= 6 and fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.add(int(fields[4]))
    return sorted(pids)


def _describe(pids: list[int]) -> str:
    described = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = "?"
        described.append(f"pid {pid} ({command[:160]})")
    return ", ".join(described) or "a process this host cannot name"


def _try_lock(path: Path, operation: int) -> int | None:
    """An open descriptor of `path` locked with `operation` (non-blocking), or None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_working_folder(folder: Path) -> int:
    """The exclusive job lock of a training working folder, as an open descriptor (the lock lives as long
    as it is open, across exec); `FolderInUseError` naming the holders when another job's launcher,
    torchrun or ranks still live there."""
    folder.mkdir(parents=True, exist_ok=True)
    job = _try_lock(folder / JOB_LOCK, fcntl.LOCK_EX)
    if job is None:
        raise FolderInUseError(_in_use(folder, lock_holders(folder / JOB_LOCK), "the training job"))
    ranks = _try_lock(folder / RANK_LOCK, fcntl.LOCK_EX)  # free unless ranks of an earlier job live on
    if ranks is None:
        os.close(job)
        raise FolderInUseError(_in_use(folder, lock_holders(folder / RANK_LOCK), "rank(s) of an earlier training job"))
    os.close(ranks)
    return job


def _in_use(folder: Path, pids: list[int], what: str) -> str:
    return (f"the working folder {folder} is in use by {what}: {_describe(pids)}; a second job cannot train beside "
            f"it. Wait for it to end or end it (kill {' '.join(map(str, pids)) or '<pid>'}), then rerun")


def check_working_folder(folder: Path) -> None:
    """`FolderInUseError` now, before a launch, when another job holds `folder` (the launcher checks again)."""
    os.close(lock_working_folder(folder))


def hold_rank_lock(folder: Path) -> None:
    """A rank's shared lock on the working folder, held until the process ends."""
    folder.mkdir(parents=True, exist_ok=True)  # (a job run by hand: its output folder may not exist yet)
    fd = os.open(folder / RANK_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a launcher checks the folder (microseconds)
    _held_locks.append(fd)
