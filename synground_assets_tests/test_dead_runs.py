"""Issue 11, item 1: a `dagster asset materialize` killed with SIGKILL leaves its run STARTED and
its `gpu` pool slot taken; `python -m synground_assets.ops.cli cleanup` marks it failed and frees the
slot, and the next GPU run is not blocked. Real `dagster` processes, the shipped dagster.yaml; the
step that holds the slot is `gpu_pool_location.gpu_step`, a stand-in for the learning stages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synground_assets.dead_runs import dead_runs_sensor
from synground_assets.ops import cli
from synground_assets.ops.processes import process_alive
from synground_assets.ops.run_health import clean_up_dead_runs, find_dead_runs

REPO = Path(__file__).parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture
def instance_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNGROUND_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    for name in ("SYNGROUND_DATA", "SYNGROUND_LINEAGE", "SYNGROUND_RECIPES"):
        env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SYNGROUND_HOME", str(tmp_path))
    return env


def materialize(env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-m", "synground_assets_tests.gpu_pool_location", "--select", "gpu_step"],
        env=env,
        cwd=env["SYNGROUND_HOME"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def gpu_slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}


def test_a_killed_run_is_marked_failed_and_frees_its_gpu_slot(instance_home, capsys):
    # 1. A run killed (with its step process) while its GPU step holds the pool's one slot.
    killed = materialize({**instance_home, "GPU_STEP_SECONDS": "600"}, start_new_session=True)
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 240
        while not gpu_slot_holders(instance):
            assert killed.poll() is None, killed.stdout.read()
            assert time.monotonic() < deadline, "the run never took a gpu slot"
            time.sleep(0.2)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED and gpu_slot_holders(instance) == {run.run_id}

        # 2. The command-line cleanup (no daemon) finds it, marks it failed and frees the slot.
        cli.main(["cleanup"])  # `python -m synground_assets.ops.cli cleanup`, in this process (same DAGSTER_HOME)
        assert f"marked run {run.run_id} failed and freed its pool slots" in capsys.readouterr().out
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not gpu_slot_holders(instance)

        # 3. The next run's GPU step gets the slot and finishes.
        following = materialize(instance_home)
        output, _ = following.communicate(timeout=240)
        assert following.returncode == 0, output
        latest = instance.get_runs(limit=1)[0]
        assert latest.run_id != run.run_id and latest.status == dg.DagsterRunStatus.SUCCESS
        assert "still blocked by limit for pool gpu" not in output


def test_a_live_process_is_alive_and_a_reaped_or_reused_pid_is_not():
    now = time.time()
    assert process_alive(os.getpid(), now)
    assert not process_alive(os.getpid(), now - 3600)  # this pid did not exist an hour ago: a reused pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, now)


def started_run(instance: dg.DagsterInstance, pid: int) -> str:
    """A run whose start was reported by process `pid`."""
    from synground_assets.ops.dagster_internals import DagsterEvent

    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    instance.report_dagster_event(DagsterEvent("PIPELINE_START", job_name=run.job_name, pid=pid), run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    return run.run_id


def test_the_sensor_fails_runs_whose_process_is_gone_and_leaves_live_ones(project_home):
    instance = dg.DagsterInstance.ephemeral()
    live = started_run(instance, os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = started_run(instance, child.pid)
    child.wait()
    context = dg.build_sensor_context(instance=instance)
    assert dead_runs_sensor(context).skip_message == f"marked 1 dead run(s) failed: {dead}"
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert dead_runs_sensor(context).skip_message == "no dead run"
    assert find_dead_runs(instance) == []


def test_a_run_that_never_started_counts_as_dead_after_the_start_timeout(project_home):
    from synground_assets.ops.dagster_internals import DagsterEvent

    instance = dg.DagsterInstance.ephemeral()
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    instance.report_dagster_event(DagsterEvent("PIPELINE_STARTING", job_name=run.job_name), run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING
    assert find_dead_runs(instance) == []  # within the 180 s start timeout
    (dead,) = find_dead_runs(instance, start_timeout_s=0)
    assert dead.run_id == run.run_id and "no process reported its start within 0 s" in dead.reason


def report(instance: dg.DagsterInstance, run_id: str, event_type: str, pid: int) -> None:
    from synground_assets.ops.dagster_internals import DagsterEvent

    step = {"step_key": "gpu_step"} if event_type == "STEP_START" else {}
    instance.report_dagster_event(DagsterEvent(event_type, job_name="noop", pid=pid, **step), run_id)


def sleeper(**popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], **popen)


def test_a_run_whose_main_process_is_gone_is_dead_and_its_leftover_step_process_is_ended(project_home, capsys):
    """Issue 19, item 3: `kill -9` of the CLI alone left a step process waiting on its pipes, so the
    run counted as alive forever. Now the main process decides, and the step process is ended."""
    instance = dg.DagsterInstance.ephemeral()
    main, step = sleeper(), sleeper()
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    report(instance, run.run_id, "PIPELINE_START", main.pid)
    report(instance, run.run_id, "STEP_START", step.pid)
    try:
        assert find_dead_runs(instance) == []
        main.kill()
        main.wait()
        (dead,) = find_dead_runs(instance)
        assert "main process(es) (pid %d)" % main.pid in dead.reason and str(step.pid) in dead.reason
        (cleaned,) = clean_up_dead_runs(instance)
        assert cleaned.ended == (step.pid,)
        assert step.wait(timeout=10) == -signal.SIGKILL
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        for process in (main, step):
            process.kill()
            process.wait()


def test_a_run_with_steps_only_is_dead_when_every_step_process_is_gone(project_home):
    from synground_assets.ops.dagster_internals import DagsterEvent

    instance = dg.DagsterInstance.ephemeral()
    step = sleeper()
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    instance.report_dagster_event(DagsterEvent("PIPELINE_START", job_name="noop"), run.run_id)  # no pid recorded
    report(instance, run.run_id, "STEP_START", step.pid)
    assert find_dead_runs(instance) == []
    step.kill()
    step.wait()
    (dead,) = find_dead_runs(instance)
    assert dead.run_id == run.run_id


RANK = """
import sys, time
from synground_assets.ops.processes import guard_training_process
guard_training_process(sys.argv[1])
time.sleep(600)
"""


def recorded(home: Path, run_id: str, count: int, timeout_s: float = 120) -> dict[str, int]:
    """kind -> pid of the processes a training job recorded for `run_id`, once there are `count`."""
    from synground_assets.ops.processes import recorded_processes, registry_folder

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entries = recorded_processes(registry_folder(home, run_id))
        if len(entries) >= count:
            return {entry["kind"]: entry["pid"] for entry in entries}
        time.sleep(0.2)
    raise AssertionError(f"the training job recorded {entries} for run {run_id}")


def wait_gone(pid: int, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_a_rank_records_itself_and_torchrun_and_exits_when_torchrun_is_killed(instance_home, tmp_path):
    """Issue 19, item 2: torchrun starts each rank in its own session, so a kill of the step's process
    group missed the rank, which trained on and published. Now the rank exits with its launcher."""
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    torchrun = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                 str(script), "run-1"], env=instance_home, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = recorded(Path(instance_home["DAGSTER_HOME"]), "run-1", 2)
        assert pids["training launcher"] == torchrun.pid
        rank = pids["training rank"]
        assert os.getsid(rank) != os.getsid(torchrun.pid)  # what made the group kill miss it
        os.kill(torchrun.pid, signal.SIGKILL)
        torchrun.wait()
        assert wait_gone(rank), f"rank {rank} outlived its torchrun"
    finally:
        if torchrun.poll() is None:
            os.killpg(torchrun.pid, signal.SIGKILL)
            torchrun.wait()


def test_cleanup_ends_the_training_processes_of_a_dead_run(instance_home, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    with dg.DagsterInstance.get() as instance:
        finished = subprocess.Popen(["true"])
        finished.wait()
        run_id = started_run(instance, finished.pid)  # its main process is gone
        # A stand-in for torchrun: it starts the rank in a session of its own and waits for it.
        spawn = f"import subprocess, sys; subprocess.Popen([sys.executable, {str(script)!r}, {run_id!r}], " \
                "start_new_session=True).wait()"
        launcher = subprocess.Popen([sys.executable, "-c", spawn], env=instance_home)
        try:
            pids = recorded(Path(instance_home["DAGSTER_HOME"]), run_id, 2)
            (dead,) = clean_up_dead_runs(instance)
            assert sorted(dead.ended) == sorted([launcher.pid, pids["training rank"]])
            assert wait_gone(pids["training rank"]) and launcher.wait(timeout=10) == -signal.SIGKILL
        finally:
            launcher.kill()
            launcher.wait()


def test_a_publish_is_refused_once_its_run_is_no_longer_started(instance_home, tmp_path):
    """Issue 19, item 2: the orphan of a run marked failed published its checkpoint under that run."""
    from synground_assets.ops.run_health import RunNotStartedError, ensure_run_started
    from synground_assets.resources.store import ShardStore, write_table

    store = ShardStore(tmp_path / "data")
    with dg.DagsterInstance.get() as instance:
        run_id = started_run(instance, os.getpid())
        check = lambda: ensure_run_started(run_id)  # noqa: E731
        with store.writing("r", "finetuned_checkpoint", "model", before_publish=check) as f:
            write_table(f, pd.DataFrame({"v": [1]}))
        instance.report_run_failed(instance.get_run_by_id(run_id), "marked failed by cleanup")
        with pytest.raises(RunNotStartedError, match=f"run {run_id} is FAILURE, no longer started"):
            with store.writing("r", "finetuned_checkpoint", "model", before_publish=check) as f:
                write_table(f, pd.DataFrame({"v": [2]}))
    assert store.read_table("r", "finetuned_checkpoint", "model").v.tolist() == [1]
