"""The training job's launcher: the step process runs

    python -m synground_assets.ops.launcher --parent STEP_PID --working-folder WORK -- torchrun ...

which asks the kernel to SIGKILL it when the step dies (prctl PR_SET_PDEATHSIG, which survives exec;
Linux), takes the working folder's exclusive job lock (`processes.lock_working_folder`) and execs the
command, which keeps its pid, the signal and the lock. So torchrun dies with the step, its ranks die
with torchrun (`processes.guard_training_process`), and a rerun never trains beside an orphan: it
fails at once with the holder's pid.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synground_assets.ops.processes import (
    EXIT_FOLDER_IN_USE,
    EXIT_LAUNCHER_GONE,
    LAUNCHER_PID_ENV,
    FolderInUseError,
    die_with_parent,
    lock_working_folder,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.ops.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=int, required=True, help="the pid to die with (the step process)")
    parser.add_argument("--working-folder", type=Path, required=True, help="the job's folder, locked for the job")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to exec (torchrun ...)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    die_with_parent()
    if os.getppid() != args.parent:  # the step died before the line above: no signal will come
        print(f"launcher: the step process {args.parent} is gone; not starting {command[0]}", file=sys.stderr)
        sys.exit(EXIT_LAUNCHER_GONE)
    try:
        lock = lock_working_folder(args.working_folder)
    except FolderInUseError as exc:
        print(f"launcher: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FOLDER_IN_USE)
    os.set_inheritable(lock, True)  # held by the exec'd command (same pid) until it ends
    sys.stdout.flush()
    os.execvpe(command[0], command, {**os.environ, LAUNCHER_PID_ENV: str(os.getpid())})


if __name__ == "__main__":
    main()
