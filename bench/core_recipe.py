"""Our training core at the seed recipe's math: the "ours" side of bench/train_speed.py.

It builds the model as `cifar.train.train_new_model` does and trains it with `cifar.train.fit`
at `TrainConfig` defaults (the recipe: batch size 32, SGD at 0.01, the same dropouts) and no
per-epoch validation, so it does the same work as bench/seed_recipe.py, then prints one JSON
line of the same shape as that script does.

    python bench/core_recipe.py --data ~/cifar10/cifar-10-python.tar.gz --epochs 1
"""
from __future__ import annotations

import sys
import time

from recipe_run import parse_args, report, training_subset


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])

    from cifar.backend import keras_module
    from cifar.config import TrainConfig
    from cifar.data import load_data
    from cifar.model import build_model
    from cifar.train import evaluate, fit

    keras = keras_module()  # our CPU settings, before anything else imports TensorFlow
    (x_train, y_train), (x_test, y_test), class_names = load_data(args.data)
    x_train, y_train = training_subset(x_train, y_train, args.train_size, args.seed)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, validation="none")
    keras.utils.set_random_seed(config.seed)  # as train_new_model builds it
    model = build_model(len(class_names), config.conv_dropout, config.dense_dropout)
    # Timed as seed_recipe.py times model.fit (after building its model): the whole call, with
    # the compiled step's tracing and every event.
    started = time.perf_counter()
    result = fit(model, (x_train, y_train), config)
    train_seconds = time.perf_counter() - started
    if result.status != "finished":
        sys.exit(f"our core did not finish: {result.reason}")
    test = evaluate(model, x_test, y_test, class_names, config.eval_batch_size)
    report("our core", len(x_train), args.epochs, train_seconds, test["test_loss"], test["test_accuracy"])


if __name__ == "__main__":
    main()
