"""What a run's test results say, ready to draw for any number of classes: its most common
confusions, a table of the classes worst first, and which of one picture's class probabilities
are worth a bar. Plain functions of the confusion matrix and of probabilities.

With a few classes the views draw every cell and every class; past `MANY_CLASSES` (CIFAR-100's
100, a user's many folders) they list and rank instead, since 10,000 cells or 100 bars are
unreadable on a projector and on a phone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

MANY_CLASSES = 20  # past this many classes, views list and rank instead of drawing one cell or bar each
TOP_CLASSES = 5  # the probabilities shown of a picture when there are many classes (plus its true class)
TOP_CONFUSIONS = 10  # the mistakes listed: most of a projector's screen, about one and a half on a phone


def many_classes(class_names: Sequence[str]) -> bool:
    return len(class_names) > MANY_CLASSES


@dataclass(frozen=True)
class Confusion:
    """One cell off the diagonal: how many test images of one class the network gave another's name."""

    true_index: int
    predicted_index: int
    true_class: str
    predicted_class: str
    count: int
    share: float  # of the true class's test images

    def in_words(self) -> str:
        """ "true maple_tree, predicted oak_tree: 23 images (23%)" """
        images = "image" if self.count == 1 else "images"
        return (f"true {self.true_class}, predicted {self.predicted_class}: {self.count:,} {images} "
                f"({self.share:.0%})")


def top_confusions(matrix: Sequence[Sequence[int]], class_names: Sequence[str], n: int = TOP_CONFUSIONS) -> list[Confusion]:
    """The n most common mistakes: the off-diagonal cells with the most images first. Equal counts go
    to the larger share of the true class (a class with fewer test images loses more to it), then in
    class order, so every page lists the same mistakes in the same order. Empty cells are left out."""
    counts = np.asarray(matrix, dtype=np.int64)
    _check_square(counts, class_names)
    row_totals = np.maximum(1, counts.sum(axis=1))
    true_index, predicted_index = np.nonzero(counts * (1 - np.eye(len(counts), dtype=np.int64)))
    cell_counts = counts[true_index, predicted_index]
    shares = cell_counts / row_totals[true_index]
    order = np.lexsort((predicted_index, true_index, -shares, -cell_counts))[:max(0, n)]
    return [Confusion(int(true_index[i]), int(predicted_index[i]), class_names[true_index[i]],
                      class_names[predicted_index[i]], int(cell_counts[i]), float(shares[i])) for i in order]


def first_cell(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> tuple[int, int]:
    """The cell a first look opens: the most common mistake; for a network that makes none, its first
    class's right answers."""
    top = top_confusions(matrix, class_names, 1)
    return (top[0].true_index, top[0].predicted_index) if top else (0, 0)


@dataclass(frozen=True)
class ClassResult:
    """One class's line of the results: how often the network was right on its test images, and the
    class it most often said instead."""

    index: int
    name: str
    images: int
    right: int
    accuracy: Optional[float]  # None for a class with no test images
    mistaken_for: Optional[str]  # the class it was most often called instead, if any
    mistaken_count: int


def per_class_table(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> list[ClassResult]:
    """Every class, the worst first: by accuracy, then by class order; a class with no test images
    has no accuracy and comes last."""
    counts = np.asarray(matrix, dtype=np.int64)
    _check_square(counts, class_names)
    rows = []
    for index, name in enumerate(class_names):
        row = counts[index]
        images, right = int(row.sum()), int(row[index])
        mistakes = row.copy()
        mistakes[index] = 0
        worst = int(mistakes.argmax())
        rows.append(ClassResult(index, name, images, right, right / images if images else None,
                                class_names[worst] if mistakes[worst] else None, int(mistakes[worst])))
    return sorted(rows, key=lambda row: (row.accuracy is None, row.accuracy or 0.0, row.index))


def top_classes(probabilities: Sequence[float], k: int = TOP_CLASSES, true_index: Optional[int] = None) -> list[int]:
    """The indices of the k most probable classes, most probable first (equal ones in class order),
    and then the true class when it is not among them: what the network said, and what it gave the truth."""
    values = np.asarray(probabilities, dtype=float)
    shown = [int(i) for i in np.argsort(-values, kind="stable")[:max(0, k)]]
    if true_index is not None and true_index not in shown:
        shown.append(int(true_index))
    return shown


def _check_square(counts: np.ndarray, class_names: Sequence[str]) -> None:
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a confusion matrix of {len(class_names)} classes is {len(class_names)}x{len(class_names)}, "
                         f"not {'x'.join(map(str, counts.shape))}")
