"""Comparing runs: what differs in words, the table's figures against hand-checked histories, the
overlaid curves' traces, and the dropout experiment's two configs."""
from __future__ import annotations

import dataclasses

import pytest

from cifar import charts, compare
from cifar.compare import ComparedRun
from cifar.config import DROPOUT_EXPERIMENT, LINK_FIELDS, SEED_RECIPE, TrainConfig, dropout_experiment

# Accuracy climbs to 0.8 while validation peaks at 0.55 in epoch 2 and ends at 0.5: by hand, the
# final validation accuracy is 0.5, the best 0.55, the gap 0.8 - 0.5 = 0.3.
OVERFITTING = [{"epoch": 1, "loss": 1.4, "accuracy": 0.5, "val_loss": 1.5, "val_accuracy": 0.45},
               {"epoch": 2, "loss": 1.0, "accuracy": 0.6, "val_loss": 1.3, "val_accuracy": 0.55},
               {"epoch": 3, "loss": 0.6, "accuracy": 0.8, "val_loss": 1.4, "val_accuracy": 0.5}]
REGULARISED = [{"epoch": 1, "loss": 1.6, "accuracy": 0.4, "val_loss": 1.5, "val_accuracy": 0.42},
               {"epoch": 2, "loss": 1.3, "accuracy": 0.52, "val_loss": 1.3, "val_accuracy": 0.5}]


def test_one_differing_setting_is_named_with_both_values():
    configs = [SEED_RECIPE.replace(dense_dropout=0.0), SEED_RECIPE]
    differing, names = compare.differing_settings(configs, ["run a", "run b"])
    assert differing == ["dense_dropout"]
    assert names == ["dense dropout 0.0", "dense dropout 0.5"]
    assert compare.difference_in_words(configs, ["run a", "run b"]) == "dense dropout 0.0 vs 0.5"


def test_the_dropout_experiment_is_named_by_both_dropouts():
    differing, names = compare.differing_settings(list(dropout_experiment()), ["a", "b"])
    assert differing == ["conv_dropout", "dense_dropout"]
    assert names == ["conv dropout 0.0, dense dropout 0.0", "conv dropout 0.2, dense dropout 0.5"]


def test_every_sidebar_setting_has_words_and_a_change_in_it_alone_is_named():
    assert set(compare.SETTING_WORDS) == set(LINK_FIELDS)  # the settings a page can set, every one in words
    changes = {"conv_dropout": 0.3, "dense_dropout": 0.1, "learning_rate": 0.1, "batch_size": 64, "epochs": 3,
               "train_size": 10_000, "seed": 7, "optimizer": "adam", "schedule": "cosine", "flip": True,
               "conv_start": "pca"}
    for name, value in changes.items():
        assert getattr(SEED_RECIPE, name) != value
        differing, names = compare.differing_settings([SEED_RECIPE, SEED_RECIPE.replace(**{name: value})], ["a", "b"])
        assert differing == [name]
        assert all(run_name.startswith(compare.SETTING_WORDS[name] + " ") for run_name in names), names
        assert names[0] != names[1]
    assert compare.differing_settings([SEED_RECIPE, SEED_RECIPE.replace(train_size=10_000)], ["a", "b"])[1] == \
        ["training images all 50,000", "training images 10,000"]


def test_runs_alike_fall_back_to_their_ids():
    differing, names = compare.differing_settings([SEED_RECIPE, SEED_RECIPE], ["run 1", "run 2"])
    assert differing == [] and names == ["run 1", "run 2"]
    assert compare.difference_in_words([SEED_RECIPE, SEED_RECIPE], ["run 1", "run 2"]) == "the same settings"
    # Among three, two alike in what differs are told apart by their ids.
    _, names = compare.differing_settings([SEED_RECIPE, SEED_RECIPE, SEED_RECIPE.replace(seed=1)], ["x", "y", "z"])
    assert names == ["seed 0 · x", "seed 0 · y", "seed 1"]
    _, names = compare.differing_settings([None, SEED_RECIPE], ["old", "new"])
    assert names[0] == "old (settings not recorded)" and len(set(names)) == 2


def test_the_table_gives_final_and_best_validation_the_gap_and_test_accuracy():
    finished = compare.comparison_row(ComparedRun("a", "no dropout", OVERFITTING, 3, test_accuracy=0.49))
    assert finished.final_validation == pytest.approx(0.5)
    assert finished.best_validation == pytest.approx(0.55)
    assert finished.gap == pytest.approx(0.3)
    assert compare.row_in_words(finished) == {
        "Run": "no dropout", "Final validation": "50.0%", "Best validation": "55.0%", "Gap": "+30.0 pts", "Test": "49.0%"}
    live = compare.comparison_row(ComparedRun("b", "dropout", REGULARISED, 12, training=True, test_accuracy=0.3))
    assert live.gap == pytest.approx(0.02) and live.test_accuracy is None
    assert compare.row_in_words(live)["Test"] == "still training"
    train_only = compare.comparison_row(ComparedRun("c", "c", [{"epoch": 1, "loss": 1.0, "accuracy": 0.6}], 1))
    assert (train_only.final_validation, train_only.best_validation, train_only.gap) == (None, None, None)
    assert compare.row_in_words(train_only)["Final validation"] == ""


def test_each_run_has_its_colour_solid_for_training_and_dashed_for_validation():
    runs = [ComparedRun("a", "dense dropout 0.0", OVERFITTING, 3, validation={"source": "test"}),
            ComparedRun("b", "dense dropout 0.5", REGULARISED, 3, training=True,
                        validation={"source": "held_out", "images": 5000}),
            ComparedRun("c", "seed 3", [{"epoch": 1, "loss": 1.0, "accuracy": 0.6}], 3)]  # trained without validation
    loss, accuracy = compare.comparison_figures(runs)
    assert loss.layout.title.text.startswith("Loss") and accuracy.layout.title.text.startswith("Accuracy")
    for key, figure in (("loss", loss), ("accuracy", accuracy)):
        colours = []
        for run in runs:
            traces = [trace for trace in figure.data if trace.name.startswith(run.name)]
            solid = [trace for trace in traces if trace.line.dash == "solid"]
            dashed = [trace for trace in traces if trace.line.dash == "dash"]
            assert len(solid) == 1 and solid[0].name == run.name
            assert list(solid[0].y) == [entry[key] for entry in run.history]
            if run.run_id == "c":
                assert dashed == []
            else:
                assert len(dashed) == 1 and list(dashed[0].y) == [entry[f"val_{key}"] for entry in run.history]
                assert dashed[0].line.color == solid[0].line.color
            colours.append(solid[0].line.color)
        assert len(set(colours)) == len(runs)
    # Validated on different sets, each dashed line is named in the legend with its set.
    in_legend = [trace.name for trace in accuracy.data if trace.showlegend is not False]
    assert "dense dropout 0.0: test-set validation" in in_legend
    assert "dense dropout 0.5: held-out validation (5,000 images)" in in_legend
    assert accuracy.layout.legend.title.text == "solid: training<br>dashed: validation"


def test_runs_validated_alike_are_named_once_and_the_legend_title_says_on_what():
    runs = [ComparedRun("a", "seed 0", OVERFITTING, 3, validation={"source": "held_out", "images": 5000}),
            ComparedRun("b", "seed 1", REGULARISED, 3, validation={"source": "held_out", "images": 5000})]
    loss, _ = compare.comparison_figures(runs)
    assert [trace.name for trace in loss.data if trace.showlegend is not False] == ["seed 0", "seed 1"]
    assert [trace.line.dash for trace in loss.data] == ["solid", "dash", "solid", "dash"]
    assert loss.layout.legend.title.text.endswith("dashed: held-out validation (5,000 images)")


def test_histories_come_from_epoch_events_else_from_saved_metrics():
    events = [{"event": "start"}, {"event": "batch", "loss": 2.0}, {"event": "epoch", **OVERFITTING[0]}]
    assert compare.epoch_history(events, {"history": REGULARISED}) == [{"event": "epoch", **OVERFITTING[0]}]
    assert compare.epoch_history([], {"history": REGULARISED}) == REGULARISED
    assert compare.epoch_history([{"event": "start"}], None) == []


def test_what_validation_was_computed_on_is_what_training_recorded_else_what_the_config_asked():
    held_out = {"source": "held_out", "images": 5000}
    start = [{"event": "start", "validation": held_out}, *OVERFITTING]
    assert compare.validation_of(start, {"validation": {"source": "test"}}, SEED_RECIPE) == held_out
    assert compare.validation_of(OVERFITTING, {"validation": {"source": "test"}}, SEED_RECIPE) == {"source": "test"}
    old_run = SEED_RECIPE.replace(validation="test")  # runs from before the held-out split say so in their config
    assert compare.validation_of(OVERFITTING, {}, old_run) == {"source": "test"}
    assert compare.validation_of([], {}, SEED_RECIPE.replace(validation="none")) is None
    assert compare.validation_of([{"event": "start", "validation": {"source": "none", "images": 0}}], {}, None) is None
    assert charts.validation_label(held_out, count=True) == "held-out validation (5,000 images)"
    assert charts.validation_label({"source": "test"}, count=True) == "test-set validation"


def test_the_dropout_experiment_differs_only_in_dropout():
    without, recipe = dropout_experiment()
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("conv_dropout", "dense_dropout"):
            continue
        assert getattr(without, field.name) == getattr(recipe, field.name) == getattr(DROPOUT_EXPERIMENT, field.name), field.name
    assert (without.conv_dropout, without.dense_dropout) == (0.0, 0.0)
    assert (recipe.conv_dropout, recipe.dense_dropout) == (SEED_RECIPE.conv_dropout, SEED_RECIPE.dense_dropout)
    assert recipe.train_size is not None  # the same subset for both: a seed picks it
