"""Issue 11, item 1: a `dagster asset materialize` killed with SIGKILL leaves its run STARTED and
its `gpu` pool slot taken; `python -m synground_assets.cli cleanup` marks it failed and frees the
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
import pytest

from synground_assets import cli
from synground_assets.dead_runs import dead_runs_sensor
from synground_assets.processes import process_alive
from synground_assets.run_health import find_dead_runs

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
        cli.main(["cleanup"])  # `python -m synground_assets.cli cleanup`, in this process (same DAGSTER_HOME)
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
    from synground_assets.dagster_internals import DagsterEvent

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
    from synground_assets.dagster_internals import DagsterEvent

    instance = dg.DagsterInstance.ephemeral()
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    instance.report_dagster_event(DagsterEvent("PIPELINE_STARTING", job_name=run.job_name), run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING
    assert find_dead_runs(instance) == []  # within the 180 s start timeout
    (dead,) = find_dead_runs(instance, start_timeout_s=0)
    assert dead.run_id == run.run_id and "no process reported its start within 0 s" in dead.reason
