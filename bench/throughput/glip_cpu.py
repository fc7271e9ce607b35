"""What one full-size GLIP forward costs on the CPU: GLIP-T (or --config large) with random weights, one
image resized to --size px on its shorter side (4:3, so 800 x 1066, zero-padded to 800 x 1088 as the
official SIZE_DIVISIBILITY 32 does), a 256-token query with two phrases, through `model.detect`
(Swin, FPN, BERT, the VL-DyHead with its pure-PyTorch deformable convolutions, post-processing).

    python -m bench.throughput.glip_cpu [--config tiny|tiny-a|large] [--size 800] [--threads N] [--repeats 1] \
        [--prior-prob 0.01]

Prints a table and writes bench/results/glip_cpu.json: build seconds, detect wall seconds (median of
--repeats after the first call, or the first call when --repeats is 1), detect CPU seconds of the
process (all threads; on a shared machine wall time also counts waiting for a core), peak resident memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics

from bench.harness import Stopwatch, repeat, result_path, write_result


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "tiny-a", "large"])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--prior-prob", type=float, default=0.01,
                        help="DYHEAD.PRIOR_PROB, the token-score bias at init (official 0.01: random weights then "
                             "give no candidate over 0.05; 0.5 sends ~1000 per level through NMS, the worst case)")
    args = parser.parse_args()

    import torch

    from synground_assets.models.glip import GlipForGrounding
    from synground_assets.models.glip.config import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    rss_start = peak_rss_mib()
    with Stopwatch() as build:
        torch.manual_seed(0)
        config = PRESETS[args.config](prior_prob=args.prior_prob)
        model = GlipForGrounding(config).eval()
    build_s = build.wall
    rss_built = peak_rss_mib()

    height, width = args.size, int(args.size * 4 / 3)
    divisor = config.size_divisibility
    padded = (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
    pixels = torch.zeros(1, 3, *padded)
    pixels[:, :, :height, :width] = torch.randn(1, 3, height, width)
    ids = torch.zeros(1, config.max_query_len, dtype=torch.long)
    ids[0, :8] = torch.tensor([101, 1037, 2417, 3899, 1012, 1037, 4937, 102])  # [CLS] a red dog . a cat [SEP]
    mask = (ids != 0).long()
    positive = [{1: [1, 2, 3], 2: [5, 6]}]

    def detect():
        with torch.inference_mode():
            return model.detect(pixels, [(height, width)], ids, mask, positive)

    # The first call alone (first-call costs), then with --repeats > 1 that many more: their median.
    first = repeat(detect, 1)
    later = repeat(detect, args.repeats) if args.repeats > 1 else first
    times, cpu_times, count = first.wall + later.wall, first.cpu + later.cpu, len(later.last[0])
    detect_s = later.median
    row = {
        "config": config.variant, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "image": f"{height}x{width} (padded {padded[0]}x{padded[1]})", "query_tokens": config.max_query_len,
        "threads": torch.get_num_threads(), "build_s": round(build_s, 2), "detect_s": round(detect_s, 2),
        "prior_prob": args.prior_prob, "first_detect_s": round(times[0], 2),
        "detect_cpu_s": round(statistics.median(cpu_times), 2),
        "detections": count,
        "peak_rss_mib": round(peak_rss_mib(), 1), "rss_after_build_mib": round(rss_built, 1),
        "rss_at_start_mib": round(rss_start, 1), "torch": torch.__version__, "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
    }
    for key, value in row.items():
        print(f"{key:22s} {value}")
    suffix = "" if args.config == "tiny" and args.prior_prob == 0.01 else f"_{args.config}_p{args.prior_prob:g}"
    write_result(row, result_path(f"glip_cpu{suffix}"))


if __name__ == "__main__":
    main()
