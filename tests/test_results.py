"""What the results views draw, for 2, 10 and 100 classes: the top confusions, the per-class table
worst first, the classes worth a probability bar, and a run's progress in words."""
from __future__ import annotations

import numpy as np
import pytest

from cifar.results import (MANY_CLASSES, TOP_CLASSES, first_cell, many_classes, per_class_table, top_classes,
                           top_confusions)


def names(count: int) -> list[str]:
    return [f"class_{i:03d}" for i in range(count)]


def test_top_confusions_are_the_largest_mistakes_in_order_and_ties_go_to_the_larger_share_then_class_order():
    matrix = [[50, 7, 3, 7],
              [7, 40, 0, 0],  # 7 of 47 images: a larger share than row 0's 7 of 67
              [7, 0, 10, 1],  # 7 of 18: larger still
              [0, 0, 2, 60]]
    top = top_confusions(matrix, ["cat", "dog", "ship", "frog"], 10)
    assert [(c.true_class, c.predicted_class, c.count) for c in top] == [
        ("ship", "cat", 7), ("dog", "cat", 7), ("cat", "dog", 7), ("cat", "frog", 7),
        ("cat", "ship", 3), ("frog", "ship", 2), ("ship", "frog", 1)]  # no diagonal, no empty cell
    assert top[0].share == pytest.approx(7 / 18)
    assert top[0].in_words() == "true ship, predicted cat: 7 images (39%)"
    assert top[-1].in_words() == "true ship, predicted frog: 1 image (6%)"
    assert len(top_confusions(matrix, ["cat", "dog", "ship", "frog"], 2)) == 2


@pytest.mark.parametrize("count", [2, 10, 100])
def test_top_confusions_match_a_plain_sort_of_every_mistake(count):
    rng = np.random.default_rng(count)
    matrix = rng.integers(0, 6, size=(count, count)) + np.diag(rng.integers(20, 60, count))
    totals = matrix.sum(axis=1)
    reference = sorted(((-int(matrix[t, p]), -matrix[t, p] / totals[t], t, p) for t in range(count) for p in range(count)
                        if t != p and matrix[t, p] > 0))
    top = top_confusions(matrix.tolist(), names(count), 15)
    assert [(c.true_index, c.predicted_index) for c in top] == [(t, p) for _, _, t, p in reference[:15]]
    assert all(c.true_class == names(count)[c.true_index] and c.count == matrix[c.true_index, c.predicted_index]
               for c in top)


def test_a_network_without_mistakes_has_no_confusions_and_opens_its_first_class():
    perfect = np.diag([5, 6, 7]).tolist()
    assert top_confusions(perfect, ["a", "b", "c"]) == []
    assert first_cell(perfect, ["a", "b", "c"]) == (0, 0)
    assert first_cell([[5, 1, 0], [0, 6, 4], [0, 0, 7]], ["a", "b", "c"]) == (1, 2)


def test_a_matrix_that_does_not_fit_the_class_names_is_refused():
    with pytest.raises(ValueError, match="3x3"):
        top_confusions([[1, 2], [3, 4]], ["a", "b", "c"])


@pytest.mark.parametrize("count", [2, 3, 10, 100])
def test_the_per_class_table_lists_every_class_once_worst_first_with_its_test_images(count):
    rng = np.random.default_rng(count + 1)
    matrix = rng.integers(0, 8, size=(count, count)) + np.diag(rng.integers(0, 40, count))
    rows = per_class_table(matrix.tolist(), names(count))
    assert sorted(row.index for row in rows) == list(range(count))
    accuracies = [row.accuracy for row in rows]
    assert accuracies == sorted(accuracies)
    for row in rows:
        assert row.images == matrix[row.index].sum() and row.right == matrix[row.index, row.index]
        assert row.accuracy == pytest.approx(matrix[row.index, row.index] / matrix[row.index].sum())
        others = [(matrix[row.index, p], -p) for p in range(count) if p != row.index]
        count_, minus_p = max(others)
        assert row.mistaken_count == count_
        assert row.mistaken_for == (names(count)[-minus_p] if count_ else None)


def test_equal_accuracies_keep_class_order_and_a_class_without_test_images_comes_last():
    matrix = [[0, 0, 0], [1, 1, 0], [0, 2, 2]]  # "a" has no test images; "b" and "c" are both 50% right
    rows = per_class_table(matrix, ["a", "b", "c"])
    assert [row.name for row in rows] == ["b", "c", "a"]
    assert rows[-1].accuracy is None and rows[-1].images == 0 and rows[-1].mistaken_for is None
    assert rows[0].mistaken_for == "a" and rows[1].mistaken_for == "b"


def test_top_classes_are_the_likeliest_first_and_add_the_true_class_when_it_is_not_among_them():
    probabilities = np.full(100, 0.001)
    probabilities[[42, 7, 99, 3, 60, 61]] = [0.4, 0.2, 0.1, 0.05, 0.04, 0.04]
    assert top_classes(probabilities, 5) == [42, 7, 99, 3, 60]  # 60 and 61 tie: class order
    assert top_classes(probabilities, 5, true_index=7) == [42, 7, 99, 3, 60]
    assert top_classes(probabilities, 5, true_index=13) == [42, 7, 99, 3, 60, 13]
    assert top_classes([0.3, 0.7], 5, true_index=0) == [1, 0]  # fewer classes than k: all of them


def test_many_classes_begin_past_the_threshold():
    assert not many_classes(names(2)) and not many_classes(names(10)) and not many_classes(names(MANY_CLASSES))
    assert many_classes(names(MANY_CLASSES + 1)) and many_classes(names(100))
    assert TOP_CLASSES < MANY_CLASSES


def test_first_of_each_class_skips_a_class_without_test_images_and_spreads_a_limited_pick():
    from cifar.predict import first_of_each_class

    labels = np.array([2, 0, 2, 0, 3])
    assert first_of_each_class(labels, 4) == [(0, 1), (2, 0), (3, 4)]  # class 1 has no test image
    hundred = np.tile(np.arange(100), 3)
    picked = first_of_each_class(hundred, 100, limit=20)
    assert len(picked) == 20 and picked[0] == (0, 0) and picked[-1] == (99, 99)
    assert all(hundred[index] == label for label, index in picked)


def test_a_runs_progress_in_words(tmp_path):
    from cifar.config import TrainConfig
    from cifar.live import duration, training_status
    from cifar.runstore import RunStore

    assert [duration(s) for s in (None, 42, 185)] == ["estimating…", "42 s", "3 min 05 s"]
    store = RunStore(tmp_path)
    run_id = store.submit(TrainConfig(epochs=4), owner="someone")
    store.claim("local-1")
    assert training_status(store.get(run_id)) == (0.0, "Loading the data and building the network…")
    batch = {"event": "batch", "epoch": 2, "progress": 0.3, "images_per_second": 1234.0, "remaining": 65.0}
    store.set_progress(run_id, {**batch, "elapsed": 3.0})
    assert training_status(store.get(run_id)) == (
        pytest.approx(0.3), "Training… epoch 2 of 4 · 1,234 images per second · time left: estimating…")
    store.set_progress(run_id, {**batch, "elapsed": 20.0})  # settled: the time left is worth saying
    assert training_status(store.get(run_id))[1].endswith("· 1 min 05 s left")
    store.request_pause(run_id)
    assert training_status(store.get(run_id))[1] == "Pausing at the next step… epoch 2 of 4"
    store.request_stop(run_id)
    assert training_status(store.get(run_id))[1].startswith("Stopping… epoch 2 of 4")


def test_a_cells_pictures_from_probabilities_are_its_images_surest_first():
    from cifar.predict import surest_in_cell

    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(100), size=3000)
    labels = rng.integers(0, 100, 3000)
    predicted = probabilities.argmax(axis=1)
    pairs = {(int(t), int(p)) for t, p in zip(labels, predicted) if t != p}
    true_index, predicted_index = sorted(pairs)[0]
    indices = surest_in_cell(labels, probabilities, true_index, predicted_index)
    expected = [i for i in range(3000) if labels[i] == true_index and predicted[i] == predicted_index]
    assert sorted(indices) == expected
    assert list(probabilities[indices].max(axis=1)) == sorted(probabilities[expected].max(axis=1), reverse=True)


def test_a_watched_pictures_answer_names_the_class_how_sure_and_the_truth_when_known():
    from cifar.snapshots import watch_answer

    names = ["cat", "dog", "ship"]
    assert watch_answer([0.1, 0.7, 0.2], names, {"test_index": 4, "label": 2}) == ("dog", pytest.approx(0.7), "ship")
    assert watch_answer([0.1, 0.2, 0.7], names, {"name": "mine.jpg", "pixels": ""}) == ("ship", pytest.approx(0.7), None)
