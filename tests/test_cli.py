"""The command line end to end, in real subprocesses, on a generated archive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "CIFAR10_DATA"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "cifar", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tiny_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = cli("train", "--epochs", "3", "--train-size", "800", "--data", str(tiny_archive), "--out", str(out))
    return out, result


def test_train_writes_model_and_metrics_and_prints_the_test_figures(trained):
    out, result = trained
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 3 and metrics["config"]["train_size"] == 800
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(metrics["history"][0])
    assert metrics["images_per_second"] > 0 and metrics["wall_seconds"] > 0
    assert metrics["test_accuracy"] > 0.8
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert "Epoch 3/3" in result.stderr and "loss" in result.stderr
    assert (out / "model.keras").is_file()


def test_evaluate_prints_one_json_object_with_per_class_accuracy(trained, tiny_archive):
    out, _ = trained
    result = cli("evaluate", "--model", str(out / "model.keras"), "--data", str(tiny_archive))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"test_loss", "test_accuracy", "per_class_accuracy"}
    assert len(report["per_class_accuracy"]) == 10 and "airplane" in report["per_class_accuracy"]
    assert report["test_accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())["test_accuracy"])


def test_predict_prints_a_line_per_image_and_fails_for_bad_files(trained, tmp_path):
    out, _ = trained
    good = tmp_path / "red.png"
    Image.fromarray(np.full((64, 48, 3), (220, 30, 30), np.uint8)).save(good)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = cli("predict", "--model", str(out / "model.keras"), str(good), str(bad))
    assert result.returncode != 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["file"] == str(good) and lines[0]["class"] in lines[0]["probabilities"]
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert lines[1]["file"] == str(bad) and "PNG" in lines[1]["error"]
    only_good = cli("predict", "--model", str(out / "model.keras"), str(good))
    assert only_good.returncode == 0


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "1", "--data", "/nowhere/cifar.tar.gz", "--out", "/tmp/unused"], "/nowhere"),
    (["evaluate", "--model", "/nowhere/model.keras"], "no model file"),
    (["train", "--epochs", "0", "--out", "/tmp/unused"], "epochs must be"),
    # An --out that cannot be made fails first, before the (missing) data is even looked for.
    (["train", "--epochs", "1", "--data", "/nowhere/cifar.tar.gz", "--out", "/dev/null/run"], "/dev/null/run"),
])
def test_errors_print_one_line_without_a_traceback(args, message):
    result = cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_offline_with_no_local_copy_says_how_to_get_the_data(tmp_path, monkeypatch, capsys):
    import cifar.data
    from cifar.cli import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run")]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: Could not download CIFAR-10")
    assert "CIFAR10_DATA" in error[0] and not (tmp_path / "run" / "model.keras").exists()


def test_importing_the_app_and_the_package_does_not_load_tensorflow():
    probe = ("import sys, app, cifar.cli, cifar.runner, cifar.store, cifar.train, cifar.predict, cifar.inside; "
             "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_plain_step_option_turns_the_fast_step_off_and_nothing_else():
    from cifar.cli import build_parser, config_from_args

    plain = config_from_args(build_parser().parse_args(["train", "--plain-step", "--out", "run"]))
    default = config_from_args(build_parser().parse_args(["train", "--out", "run"]))
    assert default.fast_step and plain == default.replace(fast_step=False)


# A value other than the seed recipe's for every TrainConfig field, as typed on the command line.
OTHER_VALUES = {"epochs": "3", "conv_dropout": "0.1", "dense_dropout": "0.3", "learning_rate": "0.002",
                "batch_size": "64", "optimizer": "adam", "schedule": "cosine", "flip": None, "conv_start": "pca",
                "train_size": "900", "validation": "test", "seed": "7", "eval_batch_size": "256", "fast_step": None,
                "conv_blocks": "2", "filters": "16", "kernel_size": "5", "dense_units": "128", "data_source": "images",
                "dataset": "0123456789abcdef"}
# A field that is valid only beside another: an image set's id names the data only when the source is images.
TOGETHER = {"data_source": ["--dataset", "0123456789abcdef"], "dataset": ["--data-source", "images"]}


def test_every_config_field_has_a_flag_that_sets_it():
    import dataclasses

    from cifar.cli import build_parser, config_from_args
    from cifar.config import SEED_RECIPE, TrainConfig

    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    assert sorted(OTHER_VALUES) == sorted(fields)  # a new field needs a line here, and gets its flag from the dataclass
    for name in fields:
        flag = "--" + name.replace("_", "-")
        default = getattr(SEED_RECIPE, name)
        typed = [f"--no-{name.replace('_', '-')}" if default else flag] if OTHER_VALUES[name] is None else [flag, OTHER_VALUES[name]]
        config = config_from_args(build_parser().parse_args(["train", *typed, *TOGETHER.get(name, []), "--out", "run"]))
        assert getattr(config, name) != default, name
        changed = {field: getattr(config, field) for field in (name, "data_source", "dataset") if field == name or
                   field in TOGETHER.get(name, []) or "--" + field.replace("_", "-") in TOGETHER.get(name, [])}
        assert config == SEED_RECIPE.replace(**changed), name  # that field (and its partner) and no other
    everything = [part for name in fields for part in (["--flip", "--no-fast-step"] if name == "flip" else [] if
                  name == "fast_step" else ["--" + name.replace("_", "-"), OTHER_VALUES[name]])]
    config = config_from_args(build_parser().parse_args(["train", *everything, "--out", "run"]))
    assert all(getattr(config, name) != getattr(SEED_RECIPE, name) for name in fields)


def test_a_preset_and_flags_combine_and_the_old_flags_still_work():
    from cifar.cli import build_parser, config_from_args
    from cifar.config import TWO_BLOCKS

    parse = lambda *args: config_from_args(build_parser().parse_args(["train", *args, "--out", "run"]))
    assert parse("--preset", "two-blocks") == TWO_BLOCKS
    assert parse("--preset", "two-blocks", "--kernel-size", "5", "--no-flip") == TWO_BLOCKS.replace(kernel_size=5)
    assert parse("--no-validation").validation == "none"
    assert parse("--validation", "test", "--no-validation").validation == "none"
    assert parse("--plain-step").fast_step is False and parse("--no-fast-step").fast_step is False
    assert parse("--preset", "quick", "--optimizer", "sgd", "--schedule", "constant", "--conv-start", "random") \
        .replace(epochs=20, learning_rate=0.01, batch_size=32).preset == "Seed recipe"


def test_a_bad_network_setting_is_one_line(tmp_path):
    result = cli("train", "--conv-blocks", "4", "--kernel-size", "4", "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "conv_blocks must be between 1 and 3, not 4" in errors[0]
    assert "kernel_size must be 3 or 5, not 4" in errors[0]
    choices = cli("train", "--optimizer", "rmsprop", "--out", str(tmp_path / "run"))
    assert choices.returncode == 2 and "invalid choice: 'rmsprop'" in choices.stderr


def test_train_builds_the_network_its_flags_describe(tiny_archive, tmp_path):
    result = cli("train", "--epochs", "1", "--train-size", "300", "--conv-blocks", "2", "--kernel-size", "5",
                 "--filters", "8", "--dense-units", "64", "--optimizer", "adam", "--learning-rate", "0.002",
                 "--data", str(tiny_archive), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["training_path"] == "plain" and "plain training step" in result.stderr
    assert {key: metrics["config"][key] for key in ("conv_blocks", "kernel_size", "filters", "dense_units", "optimizer")} \
        == {"conv_blocks": 2, "kernel_size": 5, "filters": 8, "dense_units": 64, "optimizer": "adam"}
