"""What the per-epoch snapshots cost (cifar/snapshots.py): the conv filters and a watch-list's
probabilities, taken at step 0 and after every epoch.

Trains the recipe's network on the same images with and without a watch-list, alternating for
`--rounds` rounds in this one process, and prints the median epoch time of each side, what one
snapshot took (the first, at step 0, includes tracing Keras's predict function) and the
snapshots' share of an epoch's training time.

    python bench/snapshot_cost.py --data ~/cifar10/cifar-10-python.tar.gz --train-size 10000 --epochs 2 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from cifar.backend import keras_module
    from cifar.config import TrainConfig
    from cifar.data import load_data
    from cifar.model import build_model
    from cifar.snapshots import default_watch_list, resolve_watch_list
    from cifar.train import fit

    keras = keras_module()
    (x_train, y_train), (x_test, y_test), _ = load_data(args.data)
    watched, _ = resolve_watch_list(default_watch_list(y_test), x_test, y_test)
    config = TrainConfig(epochs=args.epochs, train_size=args.train_size, validation="none")
    epoch_seconds: dict[str, list[float]] = {"without snapshots": [], "with snapshots": []}
    first, later = [], []
    for _ in range(args.rounds):
        for side in epoch_seconds:
            keras.utils.set_random_seed(config.seed)
            model = build_model(10, config.conv_dropout, config.dense_dropout)
            events: list[dict] = []
            started = time.perf_counter()
            fit(model, (x_train, y_train), config, on_event=events.append,
                watched=watched if side == "with snapshots" else None)
            epoch_seconds[side].append((time.perf_counter() - started) / args.epochs)
            costs = [event["seconds"] for event in events if event["event"] == "snapshot"]
            if costs:
                first.append(costs[0])
                later.extend(costs[1:])
    plain, watched_time = (statistics.median(epoch_seconds[side]) for side in epoch_seconds)
    each = statistics.median(later)
    print(f"epoch without snapshots: {plain:.2f} s (median of {args.rounds})")
    print(f"epoch with snapshots: {watched_time:.2f} s (median of {args.rounds})")
    print(f"one snapshot: {each * 1000:.1f} ms after an epoch, {statistics.median(first) * 1000:.1f} ms at step 0")
    print(f"snapshots' share of an epoch's training time: {(each + statistics.median(first) / args.epochs) / plain:.2%} "
          f"(measured inside the run); epoch time with/without: {watched_time / plain:.3f}")


if __name__ == "__main__":
    main()
