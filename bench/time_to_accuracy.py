"""Does the Quick demo preset reach 60% test accuracy before the seed script finishes one epoch?

Two fresh subprocesses on the same archive: bench/seed_recipe.py --epochs 1 (the time of its
training epoch and its test accuracy after it), then `python -m cifar train --preset quick
--no-validation`, timed as a whole process from launch to exit, the way a user waits for it,
with its test accuracy read from the metrics.json it writes. The quick side's time includes
starting Python and TensorFlow, loading the data, testing and saving, which the seed's epoch
time leaves out, so a "yes" is not flattered by the comparison.

    python bench/time_to_accuracy.py --data ~/cifar10/cifar-10-python.tar.gz
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_speed import BENCH, ROOT, STDERR_TAIL_LINES, data_from, recipe_args, run_json_script

TARGET_ACCURACY = 0.60  # the bar for the Quick demo (QUICK_DEMO in cifar/config.py: 60.8-61.5% over seeds 0-3)


def run_quick_demo(data: str, train_size: int | None) -> dict[str, float]:
    """The quick preset through the CLI: whole-process wall time, its own wall_seconds and its test accuracy."""
    with tempfile.TemporaryDirectory(prefix="quick_demo_") as out:
        sized = ["--train-size", str(train_size)] if train_size else []
        command = [sys.executable, "-m", "cifar", "train", "--preset", "quick", "--no-validation",
                   "--data", data, "--out", out, *sized]
        started = time.perf_counter()
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        process_seconds = time.perf_counter() - started
        metrics_file = Path(out) / "metrics.json"
        if finished.returncode != 0 or not metrics_file.is_file():
            tail = "\n".join(finished.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
            print(f"the quick demo failed (exit code {finished.returncode}); last lines of its stderr:\n{tail}",
                  file=sys.stderr)
            sys.exit(1)
        metrics = json.loads(metrics_file.read_text())
    return {"process_seconds": process_seconds, "wall_seconds": metrics["wall_seconds"],
            "test_accuracy": metrics["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CIFAR10_DATA"),
                        help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train both on this many images (default: all; smaller only for smoke tests)")
    args = parser.parse_args()
    data = data_from(args, parser)

    print("seed script, 1 epoch…", file=sys.stderr, flush=True)
    started = time.perf_counter()
    seed = run_json_script([str(BENCH / "seed_recipe.py"), *recipe_args(data, 1, args.train_size, 0)], "the seed script")
    seed_process_seconds = time.perf_counter() - started
    print("quick demo preset…", file=sys.stderr, flush=True)
    quick = run_quick_demo(data, args.train_size)

    size = f"{args.train_size:,} training images" if args.train_size else "all training images"
    print(f"on {size}:")
    print(f"{'':<26} {'wall time':>10} {'test accuracy':>14}")
    print(f"{'seed script, 1st epoch':<26} {seed['train_seconds']:>8.1f} s {seed['test_accuracy']:>14.4f}"
          f"   (training only; whole process {seed_process_seconds:.1f} s)")
    print(f"{'quick demo, whole command':<26} {quick['process_seconds']:>8.1f} s {quick['test_accuracy']:>14.4f}"
          f"   (launch to exit; run_training's own wall_seconds {quick['wall_seconds']:.1f} s)")
    reached = quick["test_accuracy"] >= TARGET_ACCURACY
    faster = quick["process_seconds"] < seed["train_seconds"]
    why = []
    if not reached:
        why.append(f"accuracy {100 * quick['test_accuracy']:.1f}% is below {100 * TARGET_ACCURACY:.0f}%")
    if not faster:
        why.append(f"{quick['process_seconds']:.1f} s is not less than {seed['train_seconds']:.1f} s")
    verdict = "yes" if reached and faster else "no (" + "; ".join(why) + ")"
    print(f"quick reached >= {100 * TARGET_ACCURACY:.0f}% in less time than the seed's first epoch: {verdict}")


if __name__ == "__main__":
    main()
