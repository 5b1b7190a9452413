"""What the two sides of bench/train_speed.py share: their arguments, the training subset they
both pick, and the one JSON line each prints. Imports no TensorFlow, so each side still
chooses its own CPU settings before TensorFlow loads.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def training_subset(x: np.ndarray, y: np.ndarray, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same random training images for both sides, so a subset comparison is fair."""
    if not size:
        return x, y
    picked = np.random.default_rng(seed).permutation(len(x))[:size]
    return x[picked], y[picked]


def report(name: str, images: int, epochs: int, train_seconds: float, test_loss: float, test_accuracy: float) -> None:
    print(json.dumps({
        "name": name,
        "images_per_second": images * epochs / train_seconds,
        "train_seconds": train_seconds,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }))
