"""bench/ as a package: its timing harness, and the rules its scripts keep (run as modules, no
`sys.path` edit, no test import, every timing through the harness); the dev tooling it shares with
the tests stays out of the pipeline."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import pytest

from bench import harness

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").rglob("*.py") if p.name != "__init__.py" and p.name != "harness.py")


def test_alternate_calls_the_variants_in_turn_and_keeps_every_round():
    order = []
    counter = itertools.count()
    timings = harness.alternate({"a": lambda: order.append("a") or next(counter),
                                 "b": lambda: order.append("b")}, rounds=3, warmup=True)
    assert order == ["a", "b"] * 4  # one warm-up call each, then three rounds in turn
    assert timings["a"].results == [1, 2, 3] and timings["a"].last == 3  # the warm-up's 0 is not a round
    assert len(timings["b"].wall) == len(timings["b"].cpu) == 3


def test_timings_give_best_and_median():
    timing = harness.Timings(wall=[3.0, 1.0, 2.0, 10.0], cpu=[0.5, 0.2, 0.3, 0.9])
    assert (timing.best, timing.median, timing.cpu_best) == (1.0, 2.5, 0.2)
    assert timing.summary()["rounds"] == 4


def test_alternate_needs_a_round():
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        harness.alternate({"a": lambda: None}, rounds=0)


def test_stopwatch_syncs_around_the_block_and_laps():
    events = []
    with harness.Stopwatch(sync=lambda: events.append("sync")) as watch:
        events.append("work")
        assert watch.lap() >= 0
    assert events == ["sync", "work", "sync"] and watch.wall >= 0


def test_laps_time_consecutive_stages():
    laps = harness.Laps()
    laps.lap("first")
    laps.lap("second")
    assert list(laps.seconds) == ["first", "second"] and laps.total >= sum(laps.seconds.values())


def test_check_target_says_met_or_not(capsys):
    assert harness.check_target("ratio", 1.05, 1.10) is True
    assert harness.check_target("rate", 0.9, 0.95, at_most=False) is False
    out = capsys.readouterr().out
    assert "target ratio: 1.05 <= 1.1: met" in out and "target rate: 0.9 >= 0.95: NOT met" in out


def test_write_result_goes_under_bench_results_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results")
    path = harness.write_result({"x": 1, "where": Path("/a")}, "some_bench")
    assert path == tmp_path / "results" / "some_bench.json"
    assert json.loads(path.read_text()) == {"x": 1, "where": "/a"}
    explicit = harness.write_result({"y": 2}, tmp_path / "elsewhere" / "out.json")
    assert json.loads(explicit.read_text()) == {"y": 2}


def imports_of(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def attribute_calls(tree: ast.AST) -> set[str]:
    """`x.y` of every call `x.y(...)` (e.g. 'time.perf_counter', 'path.insert')."""
    return {f"{node.func.value.id}.{node.func.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)}


def test_there_are_bench_scripts_in_each_group():
    assert {p.parent.name for p in SCRIPTS} == {"learning", "throughput", "orchestration"}
    assert all((p.parent / "__init__.py").exists() for p in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_a_bench_script_imports_no_test_module_edits_no_path_and_times_through_the_harness(script):
    source = script.read_text()
    tree = ast.parse(source)
    imports = imports_of(tree)
    assert not {name for name in imports if name.startswith("synground_assets_tests")}, "imports a test module"
    assert "sys.path" not in source.replace("not `sys.path`", ""), "edits sys.path: run it as a module instead"
    clocks = attribute_calls(tree) & {"time.perf_counter", "time.process_time", "time.monotonic"}
    assert not clocks, f"times with {sorted(clocks)}: use bench.harness"
    assert "bench.harness" in imports or "bench" in imports, "does not use bench.harness"


def test_the_pipeline_never_imports_the_dev_tooling():
    package = REPO / "synground_assets"
    importers = [str(p.relative_to(REPO)) for p in package.rglob("*.py") if "devtools" not in p.parts
                 and any(n.startswith("synground_assets.devtools") for n in imports_of(ast.parse(p.read_text())))]
    assert importers == []
