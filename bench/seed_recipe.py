"""The seed script, ported faithfully to Keras 3: the baseline our training core is measured against.

Float32 copies of the images, one-hot labels, model.fit at batch size 32 with SGD, then
evaluate at batch size 128, exactly as the tutorial does. It prints one JSON line with its
training throughput, test accuracy and peak memory, for bench/train_speed.py to compare.

    python bench/seed_recipe.py --data ~/cifar10/cifar-10-python.tar.gz --epochs 1
"""
from __future__ import annotations

import time

from recipe_run import parse_args, report, training_subset


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])

    import keras  # the seed script leaves TensorFlow's defaults alone (oneDNN is off by default on AMD CPUs)
    from keras import layers

    from cifar.data import load_data

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test), class_names = load_data(args.data)
    x_train, y_train = training_subset(x_train, y_train, args.train_size, args.seed)
    num_classes = len(class_names)
    x_train = x_train.astype("float32") / 255  # the seed's float copies
    x_test = x_test.astype("float32") / 255
    y_train = keras.utils.to_categorical(y_train, num_classes)  # and its one-hot labels
    y_test = keras.utils.to_categorical(y_test, num_classes)

    model = keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
        layers.Dropout(0.2),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    train_seconds = time.perf_counter() - started
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=128, verbose=0)
    report("seed script", len(x_train), args.epochs, train_seconds, test_loss, test_accuracy)


if __name__ == "__main__":
    main()
