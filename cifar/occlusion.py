"""Where the network looked: occlusion sensitivity (Zeiler and Fergus, 2014).

Cover one square of the picture with grey, ask the network again, and see how far its belief
in a class falls; do that for squares all over the picture. Where covering hurts most is what
the network relied on. `occlusion_map` asks for every covered copy in one batched prediction;
`occlusion_map_plain` asks one copy at a time, the reference the batched path is tested against.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from cifar.batches import IMAGE_SHAPE

ProbabilitiesFn = Callable[[np.ndarray], np.ndarray]  # (N, 32, 32, 3) uint8 -> (N, classes)
PATCH = 8  # a quarter of the side: big enough to hide a part of an object (an ear, a wheel)
STRIDE = 2  # 13x13 squares: a smooth map from 170 images, one batch
GREY = 128
RED = np.array([220, 20, 20], np.float32)
DROP_FOR_FULL_RED = 0.2  # a smaller largest drop is drawn fainter: a map where nothing matters stays pale


def square_corners(side: int = IMAGE_SHAPE[0], patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Where the squares start along one side; the last one always reaches the edge."""
    corners = list(range(0, side - patch + 1, stride))
    if corners[-1] != side - patch:
        corners.append(side - patch)
    return corners


def occluded_copies(image: np.ndarray, patch: int = PATCH, stride: int = STRIDE, grey: int = GREY) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One copy of the picture per grey square, and each square's top-left corner (row, column)."""
    image = np.asarray(image, np.uint8)
    corners = [(top, left) for top in square_corners(image.shape[0], patch, stride)
               for left in square_corners(image.shape[1], patch, stride)]
    copies = np.repeat(image[None], len(corners), axis=0)
    for copy, (top, left) in zip(copies, corners):
        copy[top : top + patch, left : left + patch] = grey
    return copies, corners


def drops_to_map(drops: np.ndarray, corners: list[tuple[int, int]], shape: tuple[int, int], patch: int) -> np.ndarray:
    """Each pixel's mean drop over the squares that covered it."""
    total, covered = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
    for drop, (top, left) in zip(drops, corners):
        total[top : top + patch, left : left + patch] += drop
        covered[top : top + patch, left : left + patch] += 1
    return (total / np.maximum(covered, 1)).astype(np.float32)


def occlusion_map(probabilities_fn: ProbabilitiesFn, image: np.ndarray, class_index: int, patch: int = PATCH,
                  stride: int = STRIDE, grey: int = GREY) -> np.ndarray:
    """A (32, 32) map: how much the probability of `class_index` drops when a grey square covers
    each pixel (positive: covering it lowers the belief). One prediction call for all the copies."""
    image = np.asarray(image, np.uint8)
    copies, corners = occluded_copies(image, patch, stride, grey)
    probabilities = probabilities_fn(np.concatenate([image[None], copies]))[:, class_index]
    return drops_to_map(probabilities[0] - probabilities[1:], corners, image.shape[:2], patch)


def occlusion_map_plain(probabilities_fn: ProbabilitiesFn, image: np.ndarray, class_index: int, patch: int = PATCH,
                        stride: int = STRIDE, grey: int = GREY) -> np.ndarray:
    """The same map one covered copy at a time: the reference for `occlusion_map`."""
    image = np.asarray(image, np.uint8)
    original = float(probabilities_fn(image[None])[0, class_index])
    side_rows, side_columns = image.shape[:2]
    total, covered = np.zeros((side_rows, side_columns)), np.zeros((side_rows, side_columns))
    for top in square_corners(side_rows, patch, stride):
        for left in square_corners(side_columns, patch, stride):
            copy = image.copy()
            copy[top : top + patch, left : left + patch] = grey
            drop = original - float(probabilities_fn(copy[None])[0, class_index])
            total[top : top + patch, left : left + patch] += drop
            covered[top : top + patch, left : left + patch] += 1
    return (total / covered).astype(np.float32)


def occlusion_overlay(image: np.ndarray, drop_map: np.ndarray, size: int = 256) -> Image.Image:
    """The picture in grey, scaled up without smoothing, with red where covering lowered the belief
    (the stronger the drop, the more opaque); rises in belief are not drawn."""
    grey = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("L").convert("RGB")
                      .resize((size, size), Image.Resampling.NEAREST), np.float32)
    strength = np.clip(np.asarray(drop_map, np.float32) / max(float(drop_map.max()), DROP_FOR_FULL_RED), 0, 1)
    # Smoothed up to size: the map's resolution is the square's stride, not the picture's pixel.
    alpha = np.asarray(Image.fromarray(strength).resize((size, size), Image.Resampling.BILINEAR))[..., None] * 0.8
    return Image.fromarray((grey * (1 - alpha) + RED * alpha).round().astype(np.uint8))
