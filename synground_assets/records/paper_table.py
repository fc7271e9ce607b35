"""The paper's table, regenerated from the MLflow runs of `benchmark_scores`.

    python -m synground_assets.records.paper_table [--tracking-uri URI] [--json out.json]

Rows: the baselines, then per recipe its base model and its fine-tuned model; columns: RefCOCO+
testA, testB, Flickr30k Entities test, the average gain over the base model on those benchmarks
that were scored, and the held-out shapes set. Pointing-game accuracy in %. The published numbers
(v1 of the paper, ALBEF) follow for reference. A benchmark without a run shows "-".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synground_assets.resources.tracking import Tracking

COLUMNS = {"refcoco+_testA": "RefCOCO+ testA", "refcoco+_testB": "RefCOCO+ testB", "flickr30k_test": "Flickr30k"}
EXTRA_COLUMNS = {"shapes_test": "shapes (held out)"}
PAPER_ROWS = [  # method, data, # triplets, testA, testB, Flickr30k, avg gain
    ("ALBEF off-the-shelf", "-", "-", 69.35, 53.77, 79.38, None),
    ("AMC", "real (VG)", "1,649,546", 78.89, 61.16, 86.46, 8.00),
    ("SynGround_M", "models only", "998,406", 73.70, 56.35, 86.89, 4.81),
    ("SynGround", "real + models", "2,627,952", 79.06, 63.67, 87.26, 9.16),
]


def latest_scores(tracking: Tracking) -> dict[tuple[str, str], dict[str, float]]:
    """(recipe, benchmark) -> metrics of the newest finished benchmark run."""
    runs = tracking.client.search_runs(
        [tracking.experiment_id()], "tags.stage = 'benchmark' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=5000,
    )
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for run in runs:
        key = (run.data.tags["recipe"], run.data.tags["benchmark"])
        scores.setdefault(key, {k.split("/", 1)[1]: v for k, v in run.data.metrics.items()
                                if k.startswith("pointing_game/")})
    return scores


def table_rows(scores: dict[tuple[str, str], dict[str, float]]) -> list[dict]:
    recipes = sorted({recipe for recipe, _ in scores})
    benchmarks = [*COLUMNS, *EXTRA_COLUMNS]
    rows = []
    for baseline in ("center", "random"):
        values = {}
        for benchmark in benchmarks:
            found = [s[baseline] for (_, b), s in scores.items() if b == benchmark and baseline in s]
            values[benchmark] = found[0] if found else None  # baselines do not depend on the recipe
        rows.append({"row": f"{baseline}-point baseline", **values, "avg_gain": None})
    for recipe in recipes:
        for model in ("base", "finetuned"):
            values = {b: scores.get((recipe, b), {}).get(model) for b in benchmarks}
            gains = [scores[(recipe, b)]["gain"] for b in COLUMNS if (recipe, b) in scores]
            average = sum(gains) / len(gains) if model == "finetuned" and gains else None
            rows.append({"row": f"{recipe}: {'base model' if model == 'base' else 'fine-tuned'}", **values,
                         "avg_gain": average})
    return rows


def format_table(rows: list[dict]) -> str:
    headers = ["", *COLUMNS.values(), "avg gain", *EXTRA_COLUMNS.values()]
    keys = [*COLUMNS, "avg_gain", *EXTRA_COLUMNS]

    def cell(value, gain=False) -> str:
        if value is None:
            return "-"
        return f"{value * 100:+.2f}" if gain else f"{value * 100:.2f}"

    lines = [" | ".join(headers), " | ".join("---" for _ in headers)]
    for row in rows:
        lines.append(" | ".join([row["row"], *(cell(row[k], gain=(k == "avg_gain")) for k in keys)]))
    lines += ["", "Published (v1 of the paper; ALBEF fine-tuned; pointing game %):",
              "method | data | # triplets | RefCOCO+ testA | RefCOCO+ testB | Flickr30k | avg gain",
              "---|---|---|---|---|---|---"]
    for method, data, count, a, b, f, gain in PAPER_ROWS:
        lines.append(f"{method} | {data} | {count} | {a:.2f} | {b:.2f} | {f:.2f} | "
                     f"{'-' if gain is None else f'+{gain:.2f}'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.records.paper_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <project>/mlflow.db")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    rows = table_rows(latest_scores(Tracking(args.tracking_uri)))
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
