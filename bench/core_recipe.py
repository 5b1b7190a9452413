"""Our training core at the seed recipe's math: the "ours" side of bench/train_speed.py.

It trains through `cifar.train.train_new_model` with `TrainConfig` defaults (the recipe: batch
size 32, SGD at 0.01, the same dropouts) and no per-epoch validation, so it does the same work
as bench/seed_recipe.py, then prints one JSON line of the same shape as that script does.

    python bench/core_recipe.py --data ~/cifar10/cifar-10-python.tar.gz --epochs 1
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cifar.backend import keras_module
    from cifar.config import TrainConfig
    from cifar.data import load_data
    from cifar.train import evaluate, train_new_model

    keras = keras_module()  # our CPU settings, before anything else imports TensorFlow
    (x_train, y_train), (x_test, y_test), class_names = load_data(args.data)
    if args.train_size:
        # The very images seed_recipe.py picks, so a subset comparison is of the same training set.
        picked = keras.ops.convert_to_numpy(keras.random.shuffle(range(len(x_train)), seed=args.seed)[: args.train_size])
        x_train, y_train = x_train[picked], y_train[picked]
    config = TrainConfig(epochs=args.epochs, seed=args.seed, validation="none")
    # Timed the way seed_recipe.py times model.fit: the whole call, set-up and callbacks included.
    started = time.perf_counter()
    model, result = train_new_model((x_train, y_train), (x_test, y_test), class_names, config)
    train_seconds = time.perf_counter() - started
    if result.status != "finished":
        sys.exit(f"our core did not finish: {result.reason}")
    test = evaluate(model, x_test, y_test, class_names, config.eval_batch_size)
    print(json.dumps({
        "name": "our core",
        "images_per_second": len(x_train) * args.epochs / train_seconds,
        "train_seconds": train_seconds,
        "test_loss": test["test_loss"],
        "test_accuracy": test["test_accuracy"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }))


if __name__ == "__main__":
    main()
