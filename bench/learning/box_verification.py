"""What detector ensembles and crop verification buy, on the shapes world (bench.learning.quality's method).

Every row fine-tunes the same random-init tiny BLIP-ITM (ITC + ITM + AMC, bench.learning.amc's
settings) on one set of training boxes and scores it with the pointing game on held-out shapes
seeds (true boxes). The detectors are the shapes detector with `corrupt_fraction` (a real option
of the adapter: that share of its boxes, seeded, swapped with another phrase's box of the image or
shifted off its object, confidence kept at 1.0), each with its own `corrupt_seed`, so their errors
are independent. Rows:

- clean:        the uncorrupted detector (the reference; used by no filter);
- 1 detector:   one corrupted detector (seed s), the recipe's default box filters;
- 2 detectors:  two corrupted detectors (s, s+1), fused (quality/ensemble.py), 2 of 2 agreeing;
- 3 detectors:  three (s, s+1, s+2), 2 of 3 agreeing;
- verify:       1 detector, then crop verification (quality/verify.py) by the ITM head of the model
                fine-tuned on row "1 detector" (trained on corrupted boxes: no clean model);
- 3 det+verify: 3 detectors 2 of 3, then the same crop verification;
- agreement:    1 detector, then the existing agreement filter (ITM + GradCAM mass lift), same judge.

Each row: pointing game, triplets kept, wrong-box share (IoU < 0.5 with the renderer's true box,
known to the benchmark only, used by no filter). Writes bench/results/box_verification.json.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning.box_verification --steps 300 --train-images 400 \
        --eval-images 100

Why the ITM head and not a VLM on shapes: the shapes world has no vision-language model that was
trained on it (its "describer" is procedural), and a random-weight tiny VLM's yes/no probabilities
say nothing about the crop; the grounding model fine-tuned on the corrupted data is the only judge
that knows the shapes without using any true box. Its P(match) of true pairs sits near 0.33 (ITM
trained with hard negatives, see bench.learning.quality), so ROVI's margin 0.2 (P(match) >= 0.6), meant for
a VLM's yes/no, would drop nearly everything; the bench's default margin -0.8 is P(match) >= 0.1, the
same floor bench.learning.quality gives the agreement filter for the same reason.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.harness import Stopwatch, result_path, write_result  # noqa: E402
from bench.learning.amc import EVAL_SEED_OFFSET, add_training_arguments, shapes_triplets  # noqa: E402
from bench.learning.quality import detect, fine_tune, shapes_world, to_triplets, wrong_share  # noqa: E402
from synground_assets.adapters.grounding_blip import BlipGroundingModel  # noqa: E402
from synground_assets.adapters.verifier import ItmVerifier  # noqa: E402
from synground_assets.quality.agreement import agreement_filter  # noqa: E402
from synground_assets.quality.boxes import filter_boxes  # noqa: E402
from synground_assets.quality.ensemble import fuse_proposals  # noqa: E402
from synground_assets.quality.settings import (  # noqa: E402
    AgreementSettings,
    EnsembleSettings,
    QualitySettings,
    VerifySettings,
)
from synground_assets.quality.verify import verify_filter  # noqa: E402
from synground_assets.records.items import phrase_id  # noqa: E402
from synground_assets.tiny.grounding import build_tiny_blip  # noqa: E402
from synground_assets.tiny.shapes import ShapesDetector  # noqa: E402

RESULTS = result_path("box_verification")
ROWS = ("clean", "1 detector", "2 detectors (2 of 2)", "3 detectors (2 of 3)", "1 detector + verify",
        "3 detectors (2 of 3) + verify", "1 detector + agreement")


def proposals(boxes: pd.DataFrame, name: str) -> pd.DataFrame:
    return boxes.assign(detector=name)[["detector", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score"]]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="synground-box-verification-"))
    folder = build_tiny_blip(work / "tiny-blip", image_size=args.size, patch_size=8, seed=args.seed)
    held_out = shapes_triplets(args.eval_images, args.seed + EVAL_SEED_OFFSET, args.size, oracle_boxes=True)
    images, phrases, truth, sizes = shapes_world(args.train_images, args.seed, args.size)
    phrase_text = {phrase_id(item, i): p for item, item_phrases in phrases.items() for i, p in enumerate(item_phrases)}
    size_table = pd.DataFrame([(i, w, h) for i, (w, h) in sizes.items()], columns=["item_id", "width", "height"])
    defaults = QualitySettings()
    corrupted = [detect(ShapesDetector(corrupt_fraction=args.corrupt_fraction, corrupt_seed=args.seed + k),
                        images, phrases) for k in range(3)]
    report: dict = {"settings": vars(args) | {"held_out_queries": len(held_out), "work": str(work)},
                    "pointing_game_accuracy": {}, "triplets": {}, "wrong_box_share": {}, "seconds": {},
                    "removed_per_filter": {}, "removed_wrong_share": {}}

    def train_row(name: str, boxes: pd.DataFrame, before: pd.DataFrame | None = None, removals=()) -> Path:
        best = boxes[boxes.box_rank == 0]
        report["triplets"][name] = len(best)
        report["wrong_box_share"][name] = round(wrong_share(best, truth), 4)
        counts = pd.Series([r.filter for r in removals], dtype="object").value_counts()
        report["removed_per_filter"][name] = {k: int(v) for k, v in counts.items()}
        if before is not None:  # of the boxes the filters removed, the share that was wrong (filter precision)
            removed = before[~before.box_id.isin(boxes.box_id)]
            report["removed_wrong_share"][name] = round(wrong_share(removed, truth), 4)
        accuracy, model_path, seconds = fine_tune(name.replace(" ", "_"), args, folder,
                                                  to_triplets(boxes, images, phrase_text), held_out, work)
        report["pointing_game_accuracy"][name], report["seconds"][name] = accuracy, seconds
        print(f"{name}: {accuracy:.3f} ({len(best)} triplets, wrong {report['wrong_box_share'][name]})", flush=True)
        return model_path

    def ensemble(count: int, agreeing: int) -> tuple[pd.DataFrame, list]:
        names = [f"d{k}" for k in range(count)]
        fused, _, removed = fuse_proposals(pd.concat([proposals(corrupted[k], names[k]) for k in range(count)]),
                                           names, EnsembleSettings(min_agreeing=agreeing, iou=args.iou))
        kept, filtered = filter_boxes(fused, size_table, defaults)
        return kept, removed + filtered

    verify = VerifySettings(judge="itm", margin=args.verify_margin, context=args.verify_context,
                            batch_size=args.judge_batch_size)
    with Stopwatch() as watch:  # filtering time: this block less the "1 detector" training in it
        one, one_removed = filter_boxes(corrupted[0], size_table, defaults)
        judge_path = train_row("1 detector", one, corrupted[0], one_removed)
        judge = BlipGroundingModel.from_pretrained(judge_path)
        two, two_removed = ensemble(2, 2)
        three, three_removed = ensemble(3, 2)
        verifier = ItmVerifier(judge)
        verified, verify_removed, verdicts = verify_filter(one, phrase_text, images.__getitem__, verifier, verify)
        both, both_removed, _ = verify_filter(three, phrase_text, images.__getitem__, ItmVerifier(judge), verify)
        agreement = AgreementSettings(model=str(judge_path), min_itm_probability=args.min_itm_probability)
        agreed, agreement_removed = agreement_filter(one, phrase_text, images.__getitem__, judge,
                                                     replace(agreement, batch_size=args.judge_batch_size))
    report["seconds"]["filtering"] = round(watch.wall - report["seconds"]["1 detector"], 1)
    report["verify_p_match"] = _verdict_summary(verdicts, truth, one)
    report["verify_margin_sweep"] = _margin_sweep(verdicts, one, truth)
    for name, boxes, before, removed in (
            ("2 detectors (2 of 2)", two, None, two_removed), ("3 detectors (2 of 3)", three, None, three_removed),
            ("1 detector + verify", verified, one, one_removed + verify_removed),
            ("3 detectors (2 of 3) + verify", both, three, three_removed + both_removed),
            ("1 detector + agreement", agreed, one, one_removed + agreement_removed)):
        train_row(name, boxes, before, removed)
    train_row("clean", filter_boxes(detect(ShapesDetector(), images, phrases), size_table, defaults)[0])
    return report


def _wrong_ids(boxes: pd.DataFrame, truth: dict) -> set[str]:
    return {r.box_id for r in boxes.itertuples(index=False) if wrong_share(pd.DataFrame([r]), truth) > 0}


def _verdict_summary(verdicts: pd.DataFrame, truth: dict, boxes: pd.DataFrame) -> dict:
    """The judge's mean P(match) on the crops of right and of wrong boxes (benchmark-only oracle)."""
    flags = verdicts.box_id.isin(_wrong_ids(boxes, truth))
    return {"right_boxes_mean_p_match": round(float(verdicts.p_yes[~flags].mean()), 4),
            "wrong_boxes_mean_p_match": round(float(verdicts.p_yes[flags].mean()), 4),
            "crops": len(verdicts)}


def _margin_sweep(verdicts: pd.DataFrame, boxes: pd.DataFrame, truth: dict) -> dict:
    """Without training: the triplets each margin keeps and their wrong-box share (the verifier's
    precision at each margin; the bench trains on one margin only)."""
    wrong = verdicts.box_id.isin(_wrong_ids(boxes, truth))
    sweep = {}
    for margin in (-0.8, -0.6, -0.4, -0.2, 0.0, 0.2):
        kept = verdicts.p_yes >= verdicts.p_no + margin
        sweep[str(margin)] = {"kept": int(kept.sum()),
                              "wrong_share": round(float(wrong[kept].mean()), 4) if kept.any() else None}
    return sweep


def print_table(report: dict) -> None:
    s = report["settings"]
    print(f"\npointing game on {s['held_out_queries']} held-out shapes queries; {s['steps']} steps x batch "
          f"{s['batch_size']}, {s['train_images']} training images, corrupt_fraction {s['corrupt_fraction']} per "
          f"detector (independent seeds), IoU {s['iou']}, verify margin {s['verify_margin']} context "
          f"{s['verify_context']}")
    print(f"| {'training boxes':<30} | pointing game | triplets | wrong boxes | removed boxes that were wrong |")
    print("|---|---|---|---|---|")
    for name in ROWS:
        precision = report["removed_wrong_share"].get(name)
        print(f"| {name:<30} | {report['pointing_game_accuracy'][name]:.3f} | {report['triplets'][name]} | "
              f"{report['wrong_box_share'][name]:.3f} | {'-' if precision is None else f'{precision:.3f}'} |")
    print(f"verifier P(match) on crops: {report['verify_p_match']}")
    print(f"verify margin sweep on the 1-detector boxes (no training): {report['verify_margin_sweep']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--corrupt-fraction", type=float, default=0.3)
    parser.add_argument("--iou", type=float, default=EnsembleSettings.iou, help="ensemble agreement IoU")
    parser.add_argument("--verify-margin", type=float, default=-0.8,
                        help="keep a crop when P(match) >= 1 - P(match) + margin (-0.8: P(match) >= 0.1)")
    parser.add_argument("--verify-context", type=float, default=VerifySettings.context)
    parser.add_argument("--min-itm-probability", type=float, default=0.1,
                        help="the agreement row (bench.learning.quality)")
    parser.add_argument("--judge-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    # bench_config (bench.learning.amc) reads these: its defaults (objective: the adapter's, AMC's queue).
    args.colour_augmentation, args.objective, args.queue_size = False, None, 65536
    report = run(args)
    print_table(report)
    write_result(report, args.output)


if __name__ == "__main__":
    main()
