"""Training speed, memory and accuracy of our core against the seed script, at the recipe's math.

Each run is a fresh subprocess (bench/seed_recipe.py, then bench/core_recipe.py, alternating
for --rounds rounds) on the same archive and the same training images, so neither inherits the
other's warmed caches or memory. Prints a table of training images/s, peak RSS and test
accuracy (medians over the rounds), then the speed ratio and the accuracy difference.

    python bench/train_speed.py --data ~/cifar10/cifar-10-python.tar.gz --epochs 2 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STDERR_TAIL_LINES = 30  # enough for a Python traceback, short of TensorFlow's whole log


def run_json_script(command: Sequence[str], label: str) -> dict[str, Any]:
    """Run one benchmark subprocess and return the JSON object on its last stdout line; exit if it fails."""
    finished = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    lines = finished.stdout.strip().splitlines()
    if finished.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])  # TensorFlow's noise goes to stderr, or before this line
        except json.JSONDecodeError:
            pass
    tail = "\n".join(finished.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
    print(f"{label} failed (exit code {finished.returncode}); last lines of its stderr:\n{tail}", file=sys.stderr)
    sys.exit(1)


def data_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    # Both sides must read the same file, so nothing is left to each subprocess's own search or download.
    if not args.data:
        parser.error("pass --data ARCHIVE or set CIFAR10_DATA to the cifar-10-python.tar.gz to benchmark on")
    if not Path(args.data).expanduser().exists():
        parser.error(f"--data {args.data} does not exist")
    return str(Path(args.data).expanduser())


def recipe_args(data: str, epochs: int, train_size: Optional[int], seed: int) -> list[str]:
    sized = ["--train-size", str(train_size)] if train_size else []
    return ["--data", data, "--epochs", str(epochs), "--seed", str(seed), *sized]


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("images_per_second", "peak_rss_mb", "test_accuracy")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFAR10_DATA"),
                        help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--train-size", type=int, default=None, help="train on this many images (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="seed/ours pairs to run; medians are reported")
    parser.add_argument("--seed", type=int, default=0, help="the first round's seed; round k uses seed + k - 1")
    args = parser.parse_args()
    data = data_from(args, parser)

    scripts = {"seed script": BENCH / "seed_recipe.py", "our core": BENCH / "core_recipe.py"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scripts}
    for round_number in range(1, args.rounds + 1):
        # Each round has its own seed, shared by both sides: the medians then average over
        # initialisations and batch orders instead of repeating one draw.
        shared = recipe_args(data, args.epochs, args.train_size, args.seed + round_number - 1)
        # Alternating, so a slow spell on a shared machine hits both sides rather than one.
        for name, script in scripts.items():
            print(f"round {round_number}/{args.rounds}: {name}…", file=sys.stderr, flush=True)
            runs[name].append(run_json_script([str(script), *shared], name))

    summary = {name: median_of(results) for name, results in runs.items()}
    what = f"median of {args.rounds} rounds" if args.rounds > 1 else "1 round"
    size = f"{args.train_size:,} images" if args.train_size else "all training images"
    print(f"{args.epochs} epoch{'s' if args.epochs != 1 else ''} on {size}, batch 32, SGD 0.01 ({what})")
    print(f"{'':<12} {'images/s':>10} {'peak RSS MB':>12} {'test accuracy':>14}")
    for name, figures in summary.items():
        print(f"{name:<12} {figures['images_per_second']:>10,.0f} {figures['peak_rss_mb']:>12,.0f} "
              f"{figures['test_accuracy']:>14.4f}")
    if args.rounds > 1:  # the seed script's speed is bimodal on some machines: show every round, not just the median
        for name, results in runs.items():
            print(f"{name} by round: " + ", ".join(f"{run['images_per_second']:,.0f}" for run in results) + " images/s")
    seed, ours = summary["seed script"], summary["our core"]
    print(f"speed ratio (ours / seed): {ours['images_per_second'] / seed['images_per_second']:.2f}x")
    points = round(100 * (ours["test_accuracy"] - seed["test_accuracy"]), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    print(f"accuracy difference (ours - seed): {points:+.1f} points")


if __name__ == "__main__":
    main()
