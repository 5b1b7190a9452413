"""Run settings from a "try this" link."""
from __future__ import annotations

from cifar.config import PRESETS, QUICK_DEMO, settings_from_link


def test_a_link_names_a_preset_and_changes_some_of_its_settings():
    preset, config, problems = settings_from_link({"preset": "quick", "epochs": "3", "dense_dropout": "0",
                                                   "flip": "true", "run": "ignored"})
    assert (preset, problems) == ("Quick demo", [])
    assert config == QUICK_DEMO.replace(epochs=3, dense_dropout=0.0, flip=True)


def test_a_link_without_a_preset_starts_from_the_seed_recipe():
    preset, config, problems = settings_from_link({"batch_size": "64"})
    assert preset is None and problems == []
    assert config == PRESETS["Seed recipe"].replace(batch_size=64)


def test_values_a_run_cannot_take_are_left_out_and_each_is_named():
    preset, config, problems = settings_from_link({"preset": "fast", "epochs": "many", "dense_dropout": "1.5",
                                                   "optimizer": "rmsprop", "flip": "maybe", "seed": "7"})
    assert preset is None
    assert config == PRESETS["Seed recipe"].replace(seed=7)
    assert [line.split("=")[0] for line in problems] == ["preset", "epochs", "dense_dropout", "optimizer", "flip"]
    assert "dense_dropout must be at least 0 and below 1" in problems[2]
    assert "'sgd' or 'adam'" in problems[3]
