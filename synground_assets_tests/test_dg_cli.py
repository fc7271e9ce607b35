"""The `dg` CLI ([tool.dg] in pyproject.toml) on this code location: `dg check defs`, `dg list defs` and
`dg launch`, run as docs/recipes.md gives them, on a fresh instance and data root (as .ci/run does)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from synground_assets.resources.store import ShardStore, default_data_root

REPO = Path(__file__).parents[1]
DG = Path(sys.executable).parent / "dg"  # dagster-dg-cli, a dependency (make demo runs `dg launch`)
# One process for every step: the default multiprocess executor starts one Python (and torch import) per step.
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})


def run_dg(*args: str, env: dict) -> str:
    assert DG.exists(), f"{DG} is missing: pip install -e . (dagster-dg-cli is a dependency)"
    done = subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dg {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_dg_checks_lists_and_launches_the_code_location(project_home, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    assert "All definitions loaded successfully" in run_dg("check", "defs", env=env)

    listed = json.loads(run_dg("list", "defs", "--json", env=env))
    keys = {asset["asset_key"] for asset in listed["assets"]}
    assert {"concepts", "descriptions", "images", "phrases", "boxes", "exports"} <= keys

    run_dg("launch", "--assets", "*boxes", "--partition", "shapes|00000", "--config-json", IN_PROCESS, env=env)
    store = ShardStore(default_data_root())
    assert store.shards("shapes", "boxes") == ["00000"]
    boxes = store.read_table("shapes", "boxes", "00000")
    assert len(boxes) > 0 and {"x0", "y0", "x1", "y1", "phrase_id"} <= set(boxes.columns)
