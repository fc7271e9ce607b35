"""Proof that the learning core learns: AMC on shapes-world triplets makes GradCAM point at the phrase.

Builds a random-init tiny BLIP-ITM (or, with `--model albef`, a tiny ALBEF), makes training triplets
with the shapes roles (sampler -> describer -> generator -> phrase extractor -> detector; detector
boxes are the training boxes) and
a held-out set from other seeds (scored against the renderer's true boxes), trains once with
ITC + ITM + AMC and once with ITC + ITM only, and scores the pointing game of: the untrained model,
the image-centre point, uniform random points, no-AMC, AMC. Prints a table and writes
bench/results/learning.json. Run from the checkout's root:

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.amc            # the full run
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.amc --steps 300 --train-images 400 --eval-images 100
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.amc --model albef   # -> bench/results/learning-albef.json
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.amc --only amc --ranks 2   # through torchrun, 2 ranks x B/2
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.amc --model albef --objective amc   # AMC-grounding's loss

`--objective` picks the loss (grounding/config.py OBJECTIVES; default: the adapter's, ALBEF `amc`
= MLM + ITA with momentum distillation and queues + ITM, BLIP `itc-itm-amc` = ITC + ITM); the
AMC terms are on or off per variant.

With `--ranks N` each model trains as the asset trains it: `torchrun --nproc_per_node N -m
synground_assets.ops.finetune job.json` (one thread per rank), the global batch unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.harness import Stopwatch, check_target, result_path, write_result  # noqa: E402
from synground_assets.adapters.grounding_albef import AlbefGroundingModel  # noqa: E402
from synground_assets.adapters.grounding_blip import BlipGroundingModel  # noqa: E402
from synground_assets.config.recipes import RoleSpec  # noqa: E402
from synground_assets.grounding.config import OBJECTIVES, TrainConfig  # noqa: E402
from synground_assets.grounding.data import Triplet  # noqa: E402
from synground_assets.grounding.loader import write_triplets_index  # noqa: E402
from synground_assets.grounding.pointing_game import (  # noqa: E402
    centre_point_baseline,
    evaluate_pointing_game,
    queries_of,
    random_point_baseline,
)
from synground_assets.grounding.train import train  # noqa: E402
from synground_assets.ops.finetune import job_spec  # noqa: E402
from synground_assets.records import evaluation_sets as benchmarks  # noqa: E402
from synground_assets.tiny.grounding import (
    build_tiny_albef,  # noqa: E402
    build_tiny_blip,  # noqa: E402
)

MODELS = {"blip": (build_tiny_blip, BlipGroundingModel), "albef": (build_tiny_albef, AlbefGroundingModel)}
EVAL_SEED_OFFSET = 1_000_000  # held-out images come from seeds far from the training ones


def shapes_triplets(count: int, first_seed: int, size: int, oracle_boxes: bool) -> list[Triplet]:
    """One triplet per phrase of `count` shapes images; detector boxes, or the renderer's true ones."""
    seeds = [first_seed + i for i in range(count)]
    return benchmarks.shapes_triplets([f"shapes:{s}" for s in seeds], seeds, size, oracle_boxes)


def bench_config(args, amc: bool) -> TrainConfig:
    return TrainConfig(
        objective=args.objective,
        queue_size=args.queue_size,
        learning_rate=args.lr,
        min_learning_rate=args.lr / 100,
        warmup_steps=args.steps // 20,
        max_steps=args.steps,
        batch_size=args.batch_size,
        amc_mean_weight=0.2 if amc else 0.0,
        amc_max_weight=0.8 if amc else 0.0,
        # Colour words name the shapes: grayscale or colour jitter would make many pairs false.
        colour_jitter=args.colour_augmentation,
        grayscale=args.colour_augmentation,
        seed=args.seed,
        log_every=max(1, args.steps // 10),
        checkpoint_every=args.steps,
        keep_checkpoints=1,
    )


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="synground-learning-"))
    build, adapter = MODELS[args.model]
    folder = build(work / f"tiny-{args.model}", image_size=args.size, patch_size=8, seed=args.seed)
    train_set = shapes_triplets(args.train_images, args.seed, args.size, oracle_boxes=False)
    held_out = shapes_triplets(args.eval_images, args.seed + EVAL_SEED_OFFSET, args.size, oracle_boxes=True)
    queries = queries_of(held_out)
    untrained = adapter.from_pretrained(folder)
    parameters = sum(p.numel() for p in untrained.parameters())
    rows = {
        "untrained": evaluate_pointing_game(untrained, held_out).accuracy,
        "centre point": centre_point_baseline(queries).accuracy,
        "uniform random point": random_point_baseline(queries, seed=args.seed).accuracy,
    }
    runs = {}
    base = "MLM+ITA+ITM" if (args.objective or adapter.default_objective) == "amc" else "ITC+ITM"
    variants = [(f"{base} (no AMC)", False), (f"{base}+AMC", True)]
    for name, amc in [v for v in variants if args.only in (None, "amc" if v[1] else "no-amc")]:
        with Stopwatch() as watch:
            metrics = train_variant(args, amc, name, folder, train_set, held_out, work, adapter)
        rows[name] = metrics["pointing_game_accuracy"]
        runs[name] = {"seconds": round(watch.wall, 1),
                      "final": {k: v for k, v in metrics.items() if k.startswith("final_")}}
    return {
        "settings": vars(args) | {"parameters": parameters, "grid": f"{args.size // 8}x{args.size // 8}",
                                  "train_triplets": len(train_set), "held_out_queries": len(held_out)},
        "pointing_game_accuracy": rows,
        "amc_gain_over_no_amc": rows.get(variants[1][0], float("nan")) - rows.get(variants[0][0], float("nan")),
        "runs": runs,
    }


def train_variant(args, amc: bool, name: str, folder: Path, train_set, held_out, work: Path, adapter) -> dict:
    """One model trained with or without the AMC terms; its final metrics."""
    if args.ranks:
        return train_with_torchrun(args, bench_config(args, amc), folder, train_set, held_out, work / name.split()[0])
    result = train(bench_config(args, amc), adapter.from_pretrained(folder), train_set, held_out,
                   work / name.split()[0], log_fn=lambda step, m, name=name: print(
                       f"  [{name}] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items())))
    return result.metrics


def train_with_torchrun(args, config: TrainConfig, model_folder: Path, train_set, held_out, output: Path) -> dict:
    """The job the asset launches, on `args.ranks` ranks of this machine; rank 0's metrics.json."""
    output.mkdir(parents=True, exist_ok=True)
    index = write_triplets_index(train_set, output / "index", "synthetic")
    held_out_index = write_triplets_index(held_out, output / "index" / "held_out", "synthetic")
    spec = RoleSpec(adapter=args.model, model=str(model_folder), device="cpu")
    job = output / "job.json"
    job.write_text(json.dumps(job_spec(config, spec, [str(index)], str(held_out_index), str(output))))
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "SYNGROUND_TORCH_THREADS": str(args.threads)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
                    "-m", "synground_assets.ops.finetune", str(job)], env=environment, check=True)
    return json.loads((output / "metrics.json").read_text())


def print_table(report: dict) -> None:
    settings = report["settings"]
    print(f"\n{settings['model']}: pointing game on {settings['held_out_queries']} held-out shapes queries "
          f"({settings['size']} px, {settings['grid']} grid, {settings['parameters'] / 1e6:.2f}M params, "
          f"{settings['steps']} steps x batch {settings['batch_size']})")
    print(f"{'method':<22} {'accuracy':>8}  {'train s':>7}")
    for name, accuracy in report["pointing_game_accuracy"].items():
        seconds = report["runs"].get(name, {}).get("seconds", "")
        print(f"{name:<22} {accuracy:>8.3f}  {seconds:>7}")
    print(f"AMC gain over no-AMC: {report['amc_gain_over_no_amc']:+.3f}")
    if len(report["runs"]) == 2:  # the claim: AMC points better than the same training without it
        check_target("AMC gain over no-AMC", report["amc_gain_over_no_amc"], 0.0, at_most=False)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The shapes-world training settings this benchmark, bench.learning.quality and box_verification share."""
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (patch 8)")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="blip", help="the tiny model to train")
    add_training_arguments(parser)
    parser.add_argument("--colour-augmentation", action="store_true", help="grayscale + colour jitter (off)")
    parser.add_argument("--only", choices=("amc", "no-amc"), help="train one of the two models")
    parser.add_argument("--objective", choices=OBJECTIVES, help="the loss; default: the adapter's (albef: amc)")
    parser.add_argument("--queue-size", type=int, default=65536, help="the amc objective's feature queues (AMC: 65536)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 2 is faster on an idle 2-core machine, far slower on a shared one")
    parser.add_argument("--ranks", type=int, default=0,
                        help="train through torchrun on this many ranks (the asset's launcher); 0: in this process")
    parser.add_argument("--output", type=Path, help="default: bench/results/learning.json (learning-albef.json)")
    args = parser.parse_args()
    name = "learning" if args.model == "blip" else f"learning-{args.model}"
    args.output = args.output or result_path(f"{name}-{args.objective}" if args.objective else name)
    report = run(args)
    print_table(report)
    report["settings"]["output"] = str(args.output)
    write_result(report, args.output)


if __name__ == "__main__":
    main()
