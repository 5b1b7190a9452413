"""The figures show the data they are given: smoothing, thinning, confusion matrix, probabilities."""
from __future__ import annotations

import numpy as np
import pytest

from cifar import charts


def test_smoothing_is_debiased_and_calms_noise():
    assert charts.smoothed([3.0] * 50) == pytest.approx([3.0] * 50)  # no pull towards zero at the start
    noisy = 1 + np.random.default_rng(0).normal(0, 0.5, 500)
    calm = charts.smoothed(list(noisy))
    assert calm[0] == pytest.approx(noisy[0])
    assert np.std(calm[50:]) < np.std(noisy) / 2


def test_thinning_keeps_the_newest_point_and_a_bounded_count():
    assert charts.thinned(5) == [0, 1, 2, 3, 4]
    many = charts.thinned(2001, limit=600)
    assert len(many) <= 602 and many[0] == 0 and many[-1] == 2000
    assert charts.thinned(0) == []


def test_learning_curves_plot_every_epoch_and_reach_the_latest_batch():
    batches = [{"progress": (i + 1) / 3000, "loss": 2 - i / 3000, "accuracy": i / 3000} for i in range(3000)]
    history = [{"epoch": 1, "loss": 1.5, "accuracy": 0.4, "val_loss": 1.6, "val_accuracy": 0.38}]
    loss, accuracy = charts.learning_curves(batches, history, epochs=2)
    assert loss.layout.title.text.startswith("Loss") and accuracy.layout.title.text.startswith("Accuracy")
    traces = {trace.name: trace for trace in loss.data}
    raw_loss = traces["training batches"]
    assert len(raw_loss.x) <= charts.MAX_POINTS + 2 and raw_loss.x[-1] == pytest.approx(2.0)
    assert raw_loss.y[-1] == pytest.approx(batches[-1]["loss"])
    validation = {trace.name: trace for trace in accuracy.data}["test-set validation"]
    assert list(validation.y) == [0.38]
    figure = accuracy
    assert figure.layout.xaxis.range[1] == pytest.approx(2 * 1.02)


def test_confusion_matrix_has_one_cell_per_pair_carrying_its_indices_count_and_row_share():
    counts = np.random.default_rng(3).integers(0, 50, size=(4, 4))
    names = ["cat", "dog", "ship", "frog"]
    figure = charts.confusion_matrix(counts.tolist(), names)
    cells = figure.data[0]
    assert len(cells.x) == len(cells.customdata) == 16
    seen = set()
    for x, base, (true_index, predicted_index, count), share, text in zip(
            cells.x, cells.base, cells.customdata, cells.marker.color, cells.text):
        seen.add((true_index, predicted_index))
        assert x == names[predicted_index] and base == pytest.approx(true_index - 0.5)  # drawn in its own cell
        assert count == counts[true_index, predicted_index] and text == str(count)
        assert share == pytest.approx(counts[true_index, predicted_index] / counts[true_index].sum())
    assert seen == {(t, p) for t in range(4) for p in range(4)}
    assert list(figure.layout.yaxis.ticktext) == names and list(figure.layout.xaxis.tickvals) == names


def test_a_cells_images_are_exactly_those_of_its_true_and_predicted_class():
    from cifar.predict import cell_images

    rng = np.random.default_rng(7)
    labels, predicted = rng.integers(0, 10, 2000), rng.integers(0, 10, 2000)
    reference = np.zeros((10, 10), int)
    np.add.at(reference, (labels, predicted), 1)
    for true_index in range(10):
        for predicted_index in range(10):  # the diagonal included
            indices = cell_images(labels, predicted, true_index, predicted_index)
            assert len(indices) == reference[true_index, predicted_index]
            assert np.all(labels[indices] == true_index) and np.all(predicted[indices] == predicted_index)
    confidence = rng.random(2000)
    surest_first = cell_images(labels, predicted, 3, 5, confidence)
    assert sorted(surest_first) == list(cell_images(labels, predicted, 3, 5))
    assert np.all(np.diff(confidence[surest_first]) <= 0)


def test_a_wrong_top_class_is_red_and_the_true_class_is_named_and_outlined():
    figure = charts.class_probabilities([0.1, 0.7, 0.2], ["cat", "dog", "ship"], true_class="ship")
    bars = figure.data[0]
    assert list(bars.y) == ["cat", "dog", "ship (true class)"]
    assert bars.marker.color[1] == charts.WRONG_COLOUR
    assert charts.RIGHT_COLOUR not in bars.marker.color  # nothing is green when the network is wrong
    assert bars.marker.line.width[2] > 0 and bars.marker.line.width[0] == bars.marker.line.width[1] == 0


def test_a_right_top_class_is_green_and_an_unknown_truth_judges_nothing():
    right = charts.class_probabilities([0.1, 0.7, 0.2], ["cat", "dog", "ship"], true_class="dog").data[0]
    assert right.marker.color[1] == charts.RIGHT_COLOUR and list(right.y)[1] == "dog (true class)"
    unknown = charts.class_probabilities([0.1, 0.7, 0.2], ["cat", "dog", "ship"]).data[0]
    assert charts.RIGHT_COLOUR not in unknown.marker.color and charts.WRONG_COLOUR not in unknown.marker.color


def test_class_names_take_the_article_they_sound_with():
    from ui.model_views import with_article

    assert [with_article(name) for name in ("airplane", "automobile", "cat", "Elephant")] == [
        "an airplane", "an automobile", "a cat", "an Elephant"]


def test_the_validation_curve_is_named_by_what_it_was_computed_on_and_a_pause_is_drawn_where_it_happened():
    batches = [{"progress": p, "loss": 1.0, "accuracy": 0.5} for p in (0.25, 0.5, 0.75, 1.0)]
    history = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
               {"epoch": 2, "loss": 0.8, "accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.45}]
    label = charts.validation_label({"source": "held_out", "images": 5000})
    assert label == "held-out validation"
    assert charts.validation_label(None) == "test-set validation"  # runs from before the split validated on it
    _, accuracy = charts.learning_curves(batches, history, 2, validation=label, pauses=[0.5])
    assert label in [trace.name for trace in accuracy.data]
    [line] = accuracy.layout.shapes
    assert line.x0 == line.x1 == 0.5 and line.line.dash == "dash"


def hundred_names() -> list[str]:
    return [f"class_{i:03d}" for i in range(100)]


def test_with_100_classes_the_probabilities_show_the_top_five_and_the_true_class_and_sum_up_the_rest():
    names = hundred_names()
    probabilities = np.random.default_rng(5).dirichlet(np.full(100, 0.3))
    order = list(np.argsort(-probabilities))
    truth = names[order[40]]  # far from the top
    figure = charts.class_probabilities(probabilities, names, true_class=truth)
    bars = figure.data[0]
    assert list(bars.y) == [names[i] for i in order[:5]] + [f"{truth} (true class)"]
    assert list(bars.x) == pytest.approx([probabilities[i] for i in order[:5]] + [probabilities[order[40]]])
    assert bars.marker.color[0] == charts.WRONG_COLOUR and bars.marker.line.width[-1] > 0
    [rest] = figure.layout.annotations
    shown = probabilities[order[:5]].sum() + probabilities[order[40]]
    assert rest.text == f"The other 94 classes: {1 - shown:.0%} together"
    assert figure.layout.height < 400  # six bars, not a hundred
    right = charts.class_probabilities(probabilities, names, true_class=names[order[0]]).data[0]
    assert len(right.y) == 5 and right.marker.color[0] == charts.RIGHT_COLOUR
    upload = charts.class_probabilities(probabilities, names)  # a user's picture: no truth to add
    assert len(upload.data[0].y) == 5 and upload.layout.annotations[0].text.startswith("The other 95 classes")


@pytest.mark.parametrize("count", [2, 3, 10])
def test_with_a_few_classes_every_class_gets_a_bar_and_every_pair_a_cell(count):
    names = [f"c{i}" for i in range(count)]
    probabilities = np.arange(1, count + 1) / np.arange(1, count + 1).sum()
    bars = charts.class_probabilities(probabilities, names, true_class="c0")
    assert len(bars.data[0].y) == count and not bars.layout.annotations
    matrix = np.diag(np.full(count, 9)) + 1
    cells = charts.confusion_matrix(matrix.tolist(), names).data[0]
    assert len(cells.customdata) == count * count and list(cells.text) == [str(v) for v in matrix.ravel()]
    assert len(charts.per_class_accuracy({name: 0.5 for name in names}).data[0].y) == count


def test_the_heatmap_of_100_classes_blanks_the_right_answers_and_names_each_cell_in_its_hover():
    names = hundred_names()
    rng = np.random.default_rng(11)
    matrix = rng.integers(0, 5, size=(100, 100)) + np.diag(np.full(100, 30))
    figure = charts.confusion_heatmap(matrix.tolist(), names)
    heat = figure.data[0]
    z = np.array(heat.z, dtype=float)
    assert z.shape == (100, 100) and np.isnan(np.diag(z)).all()
    shares = matrix / matrix.sum(axis=1, keepdims=True)
    off = ~np.eye(100, dtype=bool)
    assert np.allclose(z[off], shares[off])
    assert heat.text[12][34].startswith(f"true class_012, predicted class_034<br>{matrix[12, 34]} images")
    assert heat.zmin == 0 and heat.zmax == pytest.approx(max(0.05, shares[off].max()))  # a few stray mistakes stay pale
