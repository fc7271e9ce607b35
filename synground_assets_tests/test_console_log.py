"""The console of a run on the project's instance (dagster.yaml, as `make setup` copies it): the
project's progress lines, not Dagster's per-event DEBUG lines; the events are stored all the same,
and a run's config brings them back to the console."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).parents[1]
PROGRESS = "boxes shapes|00000: 64/64 items, 337.8 items/s, ETA 0 s"
SHOW_DEBUG = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


@dg.asset
def progress(context: dg.AssetExecutionContext) -> None:
    context.log.info(PROGRESS)


def run_on(home: Path, capsys, run_config: dict | None = None) -> tuple[str, dg.ExecuteInProcessResult]:
    capsys.readouterr()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([progress], instance=instance, run_config=run_config or {})
        stored = {record.dagster_event_type.name for record in instance.all_logs(result.run_id)
                  if record.is_dagster_event}
    return capsys.readouterr().err, stored


@pytest.fixture
def project_instance(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def test_the_console_shows_progress_lines_not_dagsters_debug_events(project_instance, capsys):
    console, stored = run_on(project_instance, capsys)
    assert PROGRESS in console
    assert " - DEBUG - " not in console and "STEP_START" not in console and "RUN_SUCCESS" not in console, console
    # The full event log is still in the instance (the UI's run page).
    assert {"RUN_START", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "RUN_SUCCESS"} <= stored, stored


def test_a_runs_config_brings_the_full_event_log_back_to_the_console(project_instance, capsys):
    console, _ = run_on(project_instance, capsys, SHOW_DEBUG)
    assert PROGRESS in console
    for event in ("RUN_START", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "RUN_SUCCESS"):
        assert " - DEBUG - " in console and event in console, (event, console)


def test_without_the_instance_setting_dagster_prints_every_event(tmp_path, capsys):
    """What dagster.yaml's python_logs changes: Dagster's default console level is DEBUG."""
    home = tmp_path / "bare_home"
    home.mkdir()
    console, _ = run_on(home, capsys)
    assert PROGRESS in console and "STEP_START" in console
