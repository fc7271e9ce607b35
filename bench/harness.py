"""The one timing harness of bench/: every timed script measures, reports and writes through it.

- `Stopwatch`: wall and process-CPU seconds of a block (`with Stopwatch() as watch: ...`).
- `Laps`: the seconds of consecutive stages of one run (`laps.lap("stage")` after each).
- `alternate`: the compared variants called in turn within each round (so a slow spell of a shared
  machine hits every variant alike), after an optional warm-up call of each; per variant the wall
  and CPU seconds of every round, its best (min) and median, and what each call returned.
- `repeat`: the same for one variant.
- `check_target`: prints whether a measured figure meets its target, and returns it.
- `write_result`: the JSON result, by default `bench/results/<name>.json`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class Stopwatch:
    """Wall (`perf_counter`) and process-CPU (`process_time`) seconds of a `with` block; `lap()` reads
    the wall seconds so far without stopping."""

    def __init__(self, sync: Callable[[], object] | None = None):
        self.sync = sync  # e.g. a CUDA synchronize: the work queued inside the block is counted
        self.wall = self.cpu = 0.0

    def start(self) -> Stopwatch:
        """Start without a `with` block (a polling loop reads `lap()`)."""
        if self.sync:
            self.sync()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __enter__(self) -> Stopwatch:
        return self.start()

    def lap(self) -> float:
        return time.perf_counter() - self._wall

    def __exit__(self, *exc) -> None:
        if self.sync and exc[0] is None:
            self.sync()
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


class Laps:
    """Wall seconds of consecutive stages: `lap(name)` closes the stage that has just run; `total` is
    the seconds since the start."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start


@dataclass
class Timings:
    """One variant's rounds: wall and CPU seconds, and what each call returned."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    results: list = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_best(self) -> float:
        return min(self.cpu)

    @property
    def last(self):
        return self.results[-1] if self.results else None

    def summary(self) -> dict:
        return {"rounds": len(self.wall), "best_s": self.best, "median_s": self.median, "wall_s": self.wall,
                "cpu_best_s": self.cpu_best}


def alternate(calls: dict[str, Callable[[], object]], rounds: int, warmup: bool = False,
              sync: Callable[[], object] | None = None) -> dict[str, Timings]:
    """Each call `rounds` times, the calls in turn within a round; with `warmup` each is called once
    first, untimed (first-call costs: kernels, caches, lazy imports)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if warmup:
        for call in calls.values():
            call()
    timings = {name: Timings() for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            with Stopwatch(sync) as watch:
                result = call()
            timings[name].wall.append(watch.wall)
            timings[name].cpu.append(watch.cpu)
            timings[name].results.append(result)
    return timings


def repeat(call: Callable[[], object], rounds: int, warmup: bool = False,
           sync: Callable[[], object] | None = None) -> Timings:
    """`alternate` with one variant."""
    return alternate({"call": call}, rounds, warmup, sync)["call"]


def check_target(label: str, value: float, target: float, at_most: bool = True, unit: str = "") -> bool:
    """Print `target <label>: <value> <= <target>: met` (or `not met`; `>=` when not `at_most`)."""
    met = value <= target if at_most else value >= target
    print(f"target {label}: {value:.4g}{unit} {'<=' if at_most else '>='} {target:.4g}{unit}: "
          f"{'met' if met else 'NOT met'}")
    return met


def result_path(name: str) -> Path:
    """bench/results/<name>.json."""
    return RESULTS / f"{name}.json"


def write_result(report: dict, path: Path | str) -> Path:
    """`report` as indented JSON at `path` (a bare name: under bench/results/); prints where."""
    path = Path(path)
    if path.parent == Path(".") and path.suffix != ".json":
        path = result_path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")
    return path
