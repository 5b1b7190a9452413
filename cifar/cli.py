"""The command line: `python -m cifar train | evaluate | predict | export | import`.

Every failure a user can cause (a bad path, no data offline, a bad model file, an unreadable
image) prints one line and exits non-zero; TensorFlow is imported only by the commands that
need it, so `--help` answers at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from cifar.config import PRESET_NAMES, PRESETS, TrainConfig
from cifar.data import DataError
from cifar.export import ExportError
from cifar.folders import datasets_dir, is_image_folders, read_image_set, save_image_set
from cifar.images import ImageError
from cifar.store import METRICS_FILE, MODEL_FILE, ModelFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cifar", description="Train, test and use the classic Keras CIFAR-10 ConvNet.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save it with its metrics")
    train.add_argument("--preset", choices=sorted(PRESET_NAMES), default="seed",
                       help="starting settings (default: seed, the tutorial's recipe); the options below override them")
    add_config_flags(train)
    train.add_argument("--no-validation", action="store_true", help="no per-epoch validation (--validation none)")
    train.add_argument("--plain-step", action="store_true",
                       help="train with Keras's own training step, the reference, instead of the seed ConvNet's fast one")
    train.add_argument("--data", help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA, then download); "
                                      "a CIFAR-100 copy; or your pictures: a .zip or folder of class folders (cat/1.jpg, "
                                      "dog/7.png), kept as datasets/<id>.npz beside the --out folder")
    train.add_argument("--out", required=True, help="folder for model.keras and metrics.json")

    evaluate = commands.add_parser("evaluate", help="test a saved model on the test set")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data")

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("--model", required=True)
    predict.add_argument("images", nargs="+", metavar="IMAGE")

    export = commands.add_parser("export", help="write a saved model for another runtime: LiteRT (.tflite) or ONNX")
    export.add_argument("--model", required=True, help="a .keras file, or a run's folder")
    export.add_argument("--format", required=True, choices=["litert", "onnx"])
    export.add_argument("--out", required=True, help="the file to write")

    add = commands.add_parser("import", help="test a .keras classifier and add it to a runs folder as a saved run")
    add.add_argument("--model", required=True, help="a .keras file")
    add.add_argument("--runs-dir", required=True, help="the runs folder (the app's is runs/)")
    add.add_argument("--data", help="a 10-class model's test set copy (default: CIFAR10_DATA, then the Keras cache); a "
                                    "100-class model is tested on CIFAR-100 (CIFAR100_DATA, then the Keras cache)")
    add.add_argument("--name", help="the file's name to show (default: its own)")
    add.add_argument("--status", help="write progress and the outcome to this JSON file (for the app)")
    return parser


# Words for the flags whose meaning the field's name alone does not give; every field gets a flag regardless.
FLAG_HELP = {
    "train_size": "train on a random subset of this many images",
    "validation": "what the per-epoch validation curve is computed on: held_out, images held out of the training "
                  "set (5,000, or 10%% of --train-size); test, the test set, the old way; or none",
    "flip": "mirror half the training pictures left-right each epoch",
    "conv_start": "the conv filters' start: Keras's random one, or the principal components of the pictures' patches",
    "fast_step": "the seed ConvNet's fast training step where it applies (--no-fast-step: --plain-step)",
    "conv_blocks": "Conv2D, Dropout, MaxPooling2D blocks",
    "filters": "filters in the first conv block, doubling in each later one",
    "kernel_size": "the conv kernels' size: 3 (3x3) or 5 (5x5)",
    "dense_units": "units of the dense layer before the output",
    "data_source": "without --data: which CIFAR to find or download (CIFAR-100 from CIFAR100_DATA, then the Keras "
                   "cache); images: a set kept in datasets/ beside the --out folder, named by --dataset",
    "dataset": "with --data-source images: the id of a kept set of your pictures (--data reads a new one)",
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, read from the dataclass: --conv-dropout for conv_dropout, choices
    from its Literal types, --flip/--no-flip for a bool. Unset flags keep the preset's value."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag, hint = "--" + field.name.replace("_", "-"), hints[field.name]
        help_text = f"{FLAG_HELP.get(field.name, field.name.replace('_', ' '))} (default: the preset's)"
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=list(typing.get_args(hint)), help=help_text)
        else:  # int, float, or Optional of one of them
            parser.add_argument(flag, type=options[0] if options else hint, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    changes: dict[str, Any] = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if getattr(args, field.name) is not None
    }
    if args.no_validation:
        changes["validation"] = "none"
    if args.plain_step:
        changes["fast_step"] = False
    return PRESETS[PRESET_NAMES[args.preset]].replace(**changes)


class ProgressBars:
    """One bar per epoch with loss and accuracy, redrawn in place on a terminal, one line per epoch elsewhere."""

    def __init__(self, stream: Optional[TextIO] = None, width: int = 30) -> None:
        self.stream, self.width = stream or sys.stderr, width  # sys.stderr now, not at import: it may have been replaced
        stream = self.stream
        self.live = stream.isatty()
        self.last_draw = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "download":
            total = event.get("bytes_total") or 0
            if self.live and total:
                self._draw(f"Downloading {event.get('dataset', 'CIFAR-10')} {self._bar(event['bytes_done'] / total)} {event['bytes_done'] / 1e6:.0f}/{total / 1e6:.0f} MB")
        elif kind == "start":
            self.epochs = event["epochs"]
            epochs = f"{event['epochs']} epoch{'s' if event['epochs'] != 1 else ''}"
            checked = event.get("validation", {})
            held = f" ({checked['images']:,} more held out for validation)" if checked.get("source") == "held_out" else ""
            plain = " on Keras's plain training step" if event.get("path") == "plain" else ""
            print(f"Training on {event['train_size']:,} images{held}, {epochs} of {event['steps_per_epoch']} steps{plain}",
                  file=self.stream)
        elif kind == "batch" and self.live and time.monotonic() - self.last_draw > 0.2:
            fraction = event["step"] / event["steps_per_epoch"]
            self._draw(f"Epoch {event['epoch']}/{self.epochs} {self._bar(fraction)} loss {event['epoch_loss']:.4f} "
                       f"accuracy {event['epoch_accuracy']:.4f} {event['images_per_second']:,.0f} img/s")
        elif kind == "epoch":
            validation = (f" val_loss {event['val_loss']:.4f} val_accuracy {event['val_accuracy']:.4f}"
                          if "val_loss" in event else "")
            line = (f"Epoch {event['epoch']}/{event['epochs']} {self._bar(1.0)} loss {event['loss']:.4f} accuracy "
                    f"{event['accuracy']:.4f}{validation} {event['images_per_second']:,.0f} img/s")
            self._draw(line, done=True)
        elif kind == "end" and event["status"] != "finished":
            self._draw(event["reason"], done=True)
        elif kind == "evaluating":
            print(event["message"], file=self.stream)

    def _bar(self, fraction: float) -> str:
        filled = round(self.width * min(1.0, fraction))
        return "[" + "=" * filled + " " * (self.width - filled) + "]"

    def _draw(self, line: str, done: bool = False) -> None:
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if done else ""))
            self.last_draw = time.monotonic()
        elif done:
            self.stream.write(line + "\n")
        self.stream.flush()


def train_command(args: argparse.Namespace) -> int:
    from cifar.backend import keras_module
    from cifar.runner import run_training

    config = config_from_args(args)
    data = args.data
    if data and is_image_folders(data):
        image_set = read_image_set(data)
        save_image_set(datasets_dir(Path(args.out).resolve().parent), image_set)
        print(f"Your images: {image_set.summary}", file=sys.stderr)
        config, data = config.replace(data_source="images", dataset=image_set.id), None
    elif data and "cifar-100" in str(Path(data).resolve()):  # --data-source cifar100 is in the config already
        config = config.replace(data_source="cifar100")
    # TensorFlow's import (about 1.5 s) runs while the main thread reads the data (about 2.5 s,
    # most of it gzip, which releases the GIL): a run starts training that much sooner.
    threading.Thread(target=keras_module, name="import-tensorflow", daemon=True).start()
    metrics = run_training(config, args.out, data, on_event=ProgressBars())
    print(f"Test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_accuracy']:.4f} "
          f"({metrics['images_per_second']:,.0f} images/s of training, {metrics['wall_seconds']:.0f} s in all)")
    print(f"Saved {Path(args.out) / MODEL_FILE} and {Path(args.out) / METRICS_FILE}")
    return 0 if metrics["status"] != "diverged" else 1


def evaluate_command(args: argparse.Namespace) -> int:
    from cifar.datasets import load_source, run_dataset
    from cifar.folders import image_set_splits
    from cifar.store import load_model
    from cifar.train import evaluate

    model, metadata = load_model(args.model)
    config = TrainConfig.from_dict(metadata.get("config", {})) or TrainConfig()
    if args.data and is_image_folders(args.data):  # the test images a run with this seed held out of that set
        _, (x_test, y_test), class_names = image_set_splits(read_image_set(args.data), config.seed)
    else:  # the model's own data: an image set is kept in the runs folder, beside the model's folder
        model_folder = Path(args.model).resolve()
        runs_dir = (model_folder if model_folder.is_dir() else model_folder.parent).parent
        _, (x_test, y_test), class_names = run_dataset(config, load_source(config, runs_dir, args.data))
    if len(class_names) != len(metadata["class_names"]):
        raise ModelFileError(f"The model knows {len(metadata['class_names'])} classes but the data has {len(class_names)}.")
    result = evaluate(model, x_test, y_test, class_names)
    print(json.dumps({key: result[key] for key in ("test_loss", "test_accuracy", "per_class_accuracy")}))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    import numpy as np

    from cifar.images import preprocess_image
    from cifar.predict import predict_probabilities
    from cifar.store import load_model

    model, metadata = load_model(args.model)
    class_names = metadata["class_names"]
    failed = 0
    for file in args.images:
        try:
            pixels = preprocess_image(file)
        except ImageError as error:
            print(json.dumps({"file": file, "error": str(error)}))
            failed += 1
            continue
        probabilities = predict_probabilities(model, pixels)[0]
        print(json.dumps({"file": file, "class": class_names[int(np.argmax(probabilities))],
                          "probabilities": {name: float(p) for name, p in zip(class_names, probabilities)}}))
    return 1 if failed else 0


def export_command(args: argparse.Namespace) -> int:
    from cifar.export import FORMAT_NAMES, export_model
    from cifar.store import load_model

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ModelFileError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    model, _ = load_model(args.model)
    started = time.perf_counter()
    export_model(model, out, args.format)
    print(f"Wrote {out} ({FORMAT_NAMES[args.format]}, {out.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def import_command(args: argparse.Namespace) -> int:
    from cifar.opening import add_model_run, write_status

    def progress(status: dict[str, Any]) -> None:
        write_status(args.status, status)
        print(status["stage"], file=sys.stderr)

    try:
        run_id, metrics = add_model_run(args.model, args.runs_dir, args.data, args.name, progress)
    except Exception as error:  # the app shows the outcome from the status file, whatever it was
        known = isinstance(error, (DataError, ModelFileError, ImageError, ExportError, ValueError, OSError))
        write_status(args.status, {"error": str(error) if known else
                                   f"{args.name or args.model} could not be opened: {type(error).__name__}: {error}"})
        raise
    write_status(args.status, {"run_id": run_id})
    print(f"Added run {run_id} to {args.runs_dir}: test accuracy {metrics['test_accuracy']:.4f}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"train": train_command, "evaluate": evaluate_command, "predict": predict_command,
               "export": export_command, "import": import_command}[args.command]
    try:
        return command(args)
    except (DataError, ModelFileError, ImageError, ExportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
