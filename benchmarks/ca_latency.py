"""CA block latency benchmark (a thin wrapper over ``cabench.measure.ca_benchmark``; ``cabench bench`` is the same).

    python benchmarks/ca_latency.py [--threads 1] [--rounds 40] [--json] [--allocator both|default|no-trim]
                                    [--train-steps 3] [--train-threads N]

Prints torchvision's MobileNetV2 (baseline), MobileNetV2+CA with an authors'-style CA block, and MobileNetV2+CA with
cabench's block: median / p10 / p90 latency (batch 1, 224x224, eval, models interleaved round by round) and the
ratio to the baseline, after checking that both CA variants give the same logits; then training throughput (img/s,
batch 64) of MobileNetV2 with and without CA. ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json

from cabench.measure.ca_benchmark import format_ca_benchmark, run_ca_benchmark


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads for the latency runs (default 1)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds, models interleaved (default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per model first (default 10)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per repeat; 0 skips (3)")
    parser.add_argument("--train-batch-size", type=int, default=64, help="training batch size (default 64)")
    parser.add_argument("--train-threads", type=int, default=None, help="threads for training (default: torch's)")
    parser.add_argument(
        "--allocator",
        choices=("both", "default", "no-trim"),
        default="both",
        help="latency with the allocator as is, with glibc's trimming off (no page faults per call), or both (default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run_ca_benchmark(
        threads=args.threads,
        rounds=args.rounds,
        warmup=args.warmup,
        train_steps=args.train_steps,
        train_batch_size=args.train_batch_size,
        train_threads=args.train_threads,
        allocator=args.allocator,
    )
    print(json.dumps(result) if args.json else format_ca_benchmark(result))


if __name__ == "__main__":
    main()
