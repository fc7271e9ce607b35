"""The torchrun job (CPU, gloo): 2 ranks x B/2 train like 1 rank x B, and a killed rank fails the
Dagster run launching it through Pipes, whose rerun resumes (on another world size) to the weights
of an uninterrupted run.

Tolerance: the tiny BLIP has no BatchNorm and dropout 0.0 (BLIP's config defaults; a model with
dropout draws per (rank, step) and would agree in distribution only), so the only difference
between world sizes is float summation order (matmuls of B vs B/2 rows, an all-reduce of two
halves). Observed over 4 steps: losses within 4e-7 relative; weights within 1.4e-5 absolute, except
the attention key biases: softmax ignores them, their true gradient is 0, and AdamW turns the float
noise of that zero into steps of up to the learning rate (observed 7e-4 with lr 1e-3), so they are
held to lr x steps only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import torch

from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.assets.training import run_training_job
from synground_assets.config.recipes import RoleSpec
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.loader import write_triplets_index
from synground_assets.ops.finetune import job_spec
from synground_assets.ops.processes import JOB_LOCK, RANK_LOCK, lock_holders, process_alive
from synground_assets_tests.grounding.conftest import shapes_triplets

CONFIG = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=4, batch_size=8, horizontal_flip=True,
                     log_every=1, checkpoint_every=1, keep_checkpoints=10, num_workers=0, collective_timeout_s=60)
TOLERANCE = dict(rtol=1e-6, atol=3e-5)
KEY_BIAS_TOLERANCE = dict(rtol=0.0, atol=CONFIG.learning_rate * CONFIG.max_steps)


@pytest.fixture(scope="module")
def job_inputs(tiny_blip_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("job")
    index = write_triplets_index(shapes_triplets(6, first_seed=0), folder, "synthetic")
    return folder, str(index), RoleSpec(adapter="blip", model=str(tiny_blip_folder), device="cpu")


def write_job(job_inputs, name: str, config: TrainConfig = CONFIG) -> tuple[Path, Path]:
    folder, index, spec = job_inputs
    output = folder / name
    path = folder / f"{name}.json"
    path.write_text(json.dumps(job_spec(config, spec, [index], None, str(output))))
    return path, output


def torchrun(job: Path, ranks: int) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SYNGROUND_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "synground_assets.ops.finetune", str(job)]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(job: Path, ranks: int) -> str:
    process = torchrun(job, ranks)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def final_state(output: Path) -> dict:
    (last,) = sorted((output / "checkpoints").glob("step-*.pt"))[-1:]
    return torch.load(last, weights_only=True)


@pytest.fixture(scope="module")
def one_and_two_ranks(job_inputs):
    one, one_out = write_job(job_inputs, "one-rank")
    two, two_out = write_job(job_inputs, "two-ranks")
    finished(one, 1)
    finished(two, 2)
    return final_state(one_out), final_state(two_out)


def test_two_ranks_with_half_batches_train_like_one_rank(one_and_two_ranks):
    one, two = one_and_two_ranks
    assert one["step"] == two["step"] == CONFIG.max_steps
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a.keys() == b.keys() and {"itc", "itm", "amc_mean", "amc_max"} <= a.keys()
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=TOLERANCE["rtol"]), (a["step"], name)
    assert_same_weights(two["model"], one["model"])



def test_the_compared_weights_are_trained_ones(one_and_two_ranks, tiny_blip_folder):
    initial = BlipGroundingModel.from_pretrained(tiny_blip_folder).state_dict()
    trained, _ = one_and_two_ranks
    changes = [(trained["model"][k] - v).abs().max().item() for k, v in initial.items() if v.is_floating_point()]
    assert max(changes) > 100 * TOLERANCE["atol"]


def assert_same_weights(state: dict, expected: dict) -> None:
    for name, tensor in expected.items():
        if name.endswith("key.bias"):
            torch.testing.assert_close(state[name], tensor, **KEY_BIAS_TOLERANCE)
        elif name.endswith("qkv.bias"):  # the vision tower's fused query / key / value bias
            query, key, value = tensor.chunk(3)
            got_query, got_key, got_value = state[name].chunk(3)
            torch.testing.assert_close(torch.cat([got_query, got_value]), torch.cat([query, value]), **TOLERANCE)
            torch.testing.assert_close(got_key, key, **KEY_BIAS_TOLERANCE)
        else:
            torch.testing.assert_close(state[name], tensor, **TOLERANCE)


def kill_a_rank_after(checkpoint: Path, job: Path, timeout_s: float = 240) -> threading.Thread:
    """A thread that kill -9s one rank of the job once `checkpoint` exists."""

    def watch() -> None:
        started = time.monotonic()
        while not checkpoint.exists() and time.monotonic() - started < timeout_s:
            time.sleep(0.01)
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().decode().split("\0")
            except (OSError, ValueError):
                continue
            if (str(job) in command and "synground_assets.ops.finetune" in command
                    and "torch.distributed.run" not in command):
                os.kill(int(entry.name), signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def training_asset(work: Path, ranks: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"training_on_{ranks}_ranks")
    def training(context):  # (no annotation: this module has postponed annotations, Dagster reads real ones)
        return dg.MaterializeResult(metadata=run_training_job(context, work, ranks))

    return training


def test_a_killed_rank_fails_the_dagster_run_and_the_rerun_resumes_on_one_rank_to_the_same_weights(
    job_inputs, one_and_two_ranks
):
    folder, index, spec = job_inputs
    work = folder / "killed"
    work.mkdir()
    job = work / "job.json"
    job.write_text(json.dumps(job_spec(CONFIG, spec, [index], None, str(work))))
    checkpoint = work / "checkpoints" / "step-0000001.pt"  # a kill after it leaves 3 steps to run
    watcher = kill_a_rank_after(checkpoint, job)
    started = time.monotonic()
    failed = dg.materialize([training_asset(work, 2)], raise_on_error=False)
    watcher.join()
    assert not failed.success and time.monotonic() - started < 240  # no hang: torchrun stops the other rank
    (failure,) = failed.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "failed with code" in description and "rematerialize to resume" in description, description
    assert not (work / "model").exists()
    written_at = checkpoint.stat().st_mtime_ns
    # The rerun, on one rank, resumes from rank 0's last checkpoint and ends where 2 ranks end.
    rerun = dg.materialize([training_asset(work, 1)])
    metadata = rerun.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["world_size"].value == 1 and metadata["steps"].value == CONFIG.max_steps
    assert checkpoint.stat().st_mtime_ns == written_at  # resumed, not retrained from step 0
    resumed, (_, uninterrupted) = final_state(work), one_and_two_ranks
    assert [entry["step"] for entry in resumed["history"]] == [1, 2, 3, 4]
    assert_same_weights(resumed["model"], uninterrupted["model"])


# -- issue 30, item 3: the job dies with its step, and has its working folder alone ----------------------
STEP = """
import sys
from pathlib import Path

import dagster as dg

from synground_assets.assets.training import run_training_job


@dg.asset
def training(context):
    return dg.MaterializeResult(metadata=run_training_job(context, Path(sys.argv[1]), int(sys.argv[2])))


dg.materialize([training])
"""


def job_processes(job: Path) -> dict[int, str]:
    """pid -> 'torchrun' or 'rank' for every live process of the job (found by its job.json path)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if str(job) in command and entry.name.isdigit() and process_alive(int(entry.name)):
            found[int(entry.name)] = "torchrun" if "torch.distributed.run" in command else "rank"
    return found


def end_all(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_killing_the_step_process_alone_ends_torchrun_and_its_ranks_and_the_rerun_trains(job_inputs, tmp_path):
    """Killing the step process alone (SIGKILL of its pid, not its group) left torchrun and its ranks
    training to the end, beside the rerun in the same working folder."""
    folder, index, spec = job_inputs
    work = folder / "step-killed"
    work.mkdir()
    job = work / "job.json"
    job.write_text(json.dumps(job_spec(replace(CONFIG, max_steps=1000), spec, [index], None, str(work))))
    script = tmp_path / "step.py"
    script.write_text(STEP)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SYNGROUND_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    step = subprocess.Popen([sys.executable, str(script), str(work), "2"], env=environment, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, str] = {}
    try:
        assert wait_for(lambda: (work / "checkpoints" / "step-0000001.pt").exists(), 240), "the job never trained"
        seen = job_processes(job)
        assert sorted(seen.values()) == ["rank", "rank", "torchrun"], seen
        os.kill(step.pid, signal.SIGKILL)  # the step process alone
        step.wait()
        assert wait_for(lambda: not job_processes(job), 10), f"left training after the step died: {job_processes(job)}"
    finally:
        step.kill()
        step.wait()
        end_all([*seen, *job_processes(job)])
    # A clean rerun in the same folder: resumes from the last checkpoint and ends.
    last = int(sorted((work / "checkpoints").glob("step-*.pt"))[-1].stem.split("-")[1])
    job.write_text(json.dumps(job_spec(replace(CONFIG, max_steps=last + 1), spec, [index], None, str(work))))
    rerun = dg.materialize([training_asset(work, 1)])
    assert rerun.get_asset_materialization_events()[0].materialization.metadata["steps"].value == last + 1


HOLD_RANK_LOCK = "import sys, time; from pathlib import Path; " \
                 "from synground_assets.ops.processes import hold_rank_lock; " \
                 "hold_rank_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(300)"


@pytest.mark.parametrize("holder", ["launcher", "rank"])
def test_a_job_does_not_start_in_a_working_folder_another_jobs_processes_hold(job_inputs, holder):
    """A rerun beside an orphan (its torchrun, or a rank whose torchrun is gone) fails at once, naming it."""
    folder, index, spec = job_inputs
    work = folder / f"held-by-{holder}"
    work.mkdir()
    (work / "job.json").write_text(json.dumps(job_spec(replace(CONFIG, max_steps=1), spec, [index], None, str(work))))
    if holder == "launcher":  # an orphan torchrun: the launcher's lock, held across exec
        command = [sys.executable, "-m", "synground_assets.ops.launcher", "--parent", str(os.getpid()),
                   "--working-folder", str(work), "--", sys.executable, "-c", "import time; time.sleep(300)"]
        lock, expected = work / JOB_LOCK, "in use by the training job"
    else:
        command = [sys.executable, "-c", HOLD_RANK_LOCK, str(work)]
        lock, expected = work / RANK_LOCK, "in use by rank(s) of an earlier training job"
    orphan = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: lock.exists() and lock_holders(lock) == [orphan.pid], 60), lock_holders(lock)
        failed = dg.materialize([training_asset(work, 1)], raise_on_error=False)
        assert not failed.success
        (failure,) = failed.get_step_failure_events()
        description = failure.step_failure_data.user_failure_data.description
        assert f"the working folder {work} is in use" in description and expected in description, description
        assert f"pid {orphan.pid} (" in description and f"kill {orphan.pid}" in description, description
        assert not (work / "checkpoints").exists()  # nothing trained beside it
    finally:
        orphan.kill()
        orphan.wait()
    assert dg.materialize([training_asset(work, 1)]).success  # the orphan gone, the folder is free
