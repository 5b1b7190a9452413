"""What one training run is: a config dataclass whose defaults are the seed recipe, and presets.

The seed recipe is the classic Keras CIFAR-10 tutorial: SGD at Keras's default learning rate,
batch size 32, 20 epochs. Presets are instances of the same dataclass, never copies of code.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Literal, Optional

from cifar.batches import IMAGE_SHAPE

Optimizer = Literal["sgd", "adam"]
Validation = Literal["held_out", "test", "none"]
Schedule = Literal["constant", "cosine"]
ConvStart = Literal["random", "pca"]
DataSource = Literal["cifar10", "cifar100", "images"]
DATA_SOURCE_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100 (fine labels)", "images": "your images"}
DATA_SOURCES = tuple(DATA_SOURCE_NAMES)

_DATASET_ID = re.compile(r"^[0-9a-f]{16}$")  # cifar/folders.py: the first 16 hex digits of the set's sha256


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # the recipe's fit(epochs=20)
    conv_dropout: float = 0.2  # Dropout(0.2) after the conv layer
    dense_dropout: float = 0.5  # Dropout(0.5) after Dense(512)
    learning_rate: float = 0.01  # Keras's default for optimizer='sgd'
    batch_size: int = 32  # the recipe's fit(batch_size=32)
    optimizer: Optimizer = "sgd"  # optimizer='sgd': plain SGD, no momentum
    schedule: Schedule = "constant"  # the recipe never changes its learning rate
    flip: bool = False  # mirror half the training images left-right each epoch (augmentation); the recipe does not
    conv_start: ConvStart = "random"  # the conv filters' start: Keras's random one, or principal components of patches (cifar.model)
    train_size: Optional[int] = None  # None trains on every training image; a number picks a subset for quick demos
    validation: Validation = "held_out"  # the per-epoch curve's images: held out of training ("test" was the old way; the recipe has none)
    seed: int = 0  # the same seed and config give the same metrics on CPU
    eval_batch_size: int = 128  # the recipe's evaluate(batch_size=128)
    fast_step: bool = True  # the seed ConvNet's fast step (cifar/steps.py); False trains on the plain path, the reference
    conv_blocks: int = 1  # Conv2D -> Dropout -> MaxPooling2D blocks: the recipe has one
    filters: int = 32  # the first block's Conv2D(32); each later block doubles it
    kernel_size: int = 3  # the recipe's 3x3 kernel; 5 sees 5x5 patches
    dense_units: int = 512  # the recipe's Dense(512)
    data_source: DataSource = "cifar10"  # the recipe's data; "cifar100" (fine labels) or "images", a user's class folders
    dataset: Optional[str] = None  # with "images": the uploaded set's id (cifar/folders.py), so a saved run finds it again

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.epochs <= 1000:
            problems.append(f"epochs must be between 1 and 1000, not {self.epochs}")
        for name in ("conv_dropout", "dense_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                problems.append(f"{name} must be at least 0 and below 1, not {value}")
        if not 0.0 < self.learning_rate <= 10.0:
            problems.append(f"learning_rate must be above 0 and at most 10, not {self.learning_rate}")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch_size must be between 1 and 4096, not {self.batch_size}")
        if self.train_size is not None and self.train_size < 1:
            problems.append(f"train_size must be at least 1, not {self.train_size}")
        if self.optimizer not in ("sgd", "adam"):
            problems.append(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            problems.append(f"schedule must be 'constant' or 'cosine', not {self.schedule!r}")
        if self.conv_start not in ("random", "pca"):
            problems.append(f"conv_start must be 'random' or 'pca', not {self.conv_start!r}")
        if self.validation not in ("held_out", "test", "none"):
            problems.append(f"validation must be 'held_out', 'test' or 'none', not {self.validation!r}")
        if not MIN_CONV_BLOCKS <= self.conv_blocks <= MAX_CONV_BLOCKS:
            problems.append(f"conv_blocks must be between {MIN_CONV_BLOCKS} and {MAX_CONV_BLOCKS}, not {self.conv_blocks}")
        if not MIN_FILTERS <= self.filters <= MAX_FILTERS:
            problems.append(f"filters must be between {MIN_FILTERS} and {MAX_FILTERS}, not {self.filters}")
        if self.kernel_size not in KERNEL_SIZES:
            problems.append(f"kernel_size must be 3 or 5, not {self.kernel_size}")
        if not MIN_DENSE_UNITS <= self.dense_units <= MAX_DENSE_UNITS:
            problems.append(f"dense_units must be between {MIN_DENSE_UNITS} and {MAX_DENSE_UNITS}, not {self.dense_units}")
        if self.conv_start == "pca" and self.kernel_size in KERNEL_SIZES and MIN_FILTERS <= self.filters <= MAX_FILTERS and (
                self.filters % 2 or self.filters > pca_filter_limit(self.kernel_size)):
            problems.append(f"conv_start 'pca' starts the filters as pairs of a pattern and its negative: with a "
                            f"{self.kernel_size}x{self.kernel_size} kernel it takes an even number of filters up to "
                            f"{pca_filter_limit(self.kernel_size)}, not {self.filters}")
        if self.data_source not in DATA_SOURCES:
            problems.append(f"data_source must be 'cifar10', 'cifar100' or 'images', not {self.data_source!r}")
        elif self.data_source == "images" and not (isinstance(self.dataset, str) and _DATASET_ID.match(self.dataset)):
            problems.append(f"data_source 'images' needs the id of an uploaded image set as dataset, not {self.dataset!r}")
        elif self.data_source != "images" and self.dataset is not None:
            problems.append(f"dataset names an uploaded image set, which data_source {self.data_source!r} does not use")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def network(self) -> dict[str, int]:
        """The settings that shape the network (not how it trains): equal for two runs of the same network."""
        return {name: getattr(self, name) for name in NETWORK_FIELDS}

    def network_in_words(self) -> str:
        """The network as a class reads it: "2 conv blocks of 32, 64 5×5 filters, dense 256"."""
        blocks = f"{self.conv_blocks} conv block{'s' if self.conv_blocks != 1 else ''}"
        filters = ", ".join(str(self.filters * 2**block) for block in range(self.conv_blocks))
        return f"{blocks} of {filters} {self.kernel_size}×{self.kernel_size} filters, dense {self.dense_units}"

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Optional["TrainConfig"]:
        """The config a run's metrics recorded, or None if they hold none that is valid. Keys this
        version does not know (or no longer knows) are left out, so old runs still read."""
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except (TypeError, ValueError):
            return None

    @property
    def preset(self) -> Optional[str]:
        """The preset these settings are, if they are one, on whatever data."""
        settings = self.replace(data_source="cifar10", dataset=None)
        return next((name for name, preset in PRESETS.items() if preset == settings), None)

    def in_words(self) -> str:
        """The settings as a line a class can read: "Quick demo: 1 epoch, Adam at 0.0007, ..."."""
        preset = self.preset
        images = "all training images" if self.train_size is None else f"{self.train_size:,} training images"
        if self.validation == "held_out":
            held = "10%" if self.train_size is None else f"{held_out_size(self.train_size):,}"
            images += f" ({held} held out for validation)"
        words = (f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}, {self.optimizer.upper()} at {self.learning_rate:g}, "
                 f"batch {self.batch_size}, dropout {self.conv_dropout:g}/{self.dense_dropout:g}, {images}")
        if self.network != SEED_NETWORK:
            words = f"{self.network_in_words()}; {words}"
        if self.data_source != "cifar10":
            words += f", on {DATA_SOURCE_NAMES[self.data_source]}"
        return f"{preset}: {words}" if preset else words


NETWORK_FIELDS = ("conv_blocks", "filters", "kernel_size", "dense_units")
MIN_CONV_BLOCKS, MAX_CONV_BLOCKS = 1, 3  # three poolings take 32x32 pictures to 4x4
# At most 64 filters and 1,024 dense units: the largest network (one block, 16x16x64 into 1,024) has 17M
# weights, four times the recipe's, which a hosted app's memory still holds with Adam's moments.
MIN_FILTERS, MAX_FILTERS = 8, 64
KERNEL_SIZES = (3, 5)
MIN_DENSE_UNITS, MAX_DENSE_UNITS = 16, 1024


def pca_filter_limit(kernel_size: int, channels: int = IMAGE_SHAPE[-1]) -> int:
    """The most filters a principal-component start can give: two (a component and its negative) per patch dimension."""
    return 2 * kernel_size * kernel_size * channels


HELD_OUT_IMAGES = 5_000  # the validation images held out of the full training set
HELD_OUT_SHARE = 0.1  # of a training subset, the share held out instead


def held_out_size(train_size: Optional[int]) -> int:
    """How many of the training images a run holds out for its validation curve."""
    return HELD_OUT_IMAGES if train_size is None else max(1, round(train_size * HELD_OUT_SHARE))


SEED_RECIPE = TrainConfig()
SEED_NETWORK = SEED_RECIPE.network  # the only network the fast step (cifar/steps.py) trains

# Same layers and dropouts, better training choices: conv filters started as the principal components
# of the pictures' 3x3 patches, then Adam with a cosine decay: about 61% after one epoch (bench/README.md).
QUICK_DEMO = TrainConfig(epochs=1, learning_rate=7e-4, batch_size=64, optimizer="adam", schedule="cosine",
                         conv_start="pca")

# Without dropout the network memorises the training set: the gap between the train and
# validation curves is the overfitting lesson.
NO_DROPOUT = TrainConfig(conv_dropout=0.0, dense_dropout=0.0)

# Adam at a constant rate on a 10,000-image subset overfits within a few epochs: the gap shows, and both runs finish in minutes.
DROPOUT_EXPERIMENT = TrainConfig(epochs=12, learning_rate=1e-3, batch_size=64, optimizer="adam", schedule="constant",
                                 conv_start="random", train_size=10_000)


# A second conv block: pooled twice, the dense layer sees 8x8x64 instead of 16x16x32, half the recipe's
# weights; trained as the Quick demo is, for 3 epochs (its figures are in bench/README.md).
TWO_BLOCKS = QUICK_DEMO.replace(conv_blocks=2, epochs=3)


def dropout_experiment() -> tuple[TrainConfig, TrainConfig]:
    """The dropout experiment's two runs: "No dropout" (conv 0.0, dense 0.0), then the recipe's dropouts."""
    return (DROPOUT_EXPERIMENT.replace(conv_dropout=0.0, dense_dropout=0.0),
            DROPOUT_EXPERIMENT.replace(conv_dropout=SEED_RECIPE.conv_dropout, dense_dropout=SEED_RECIPE.dense_dropout))


PRESETS: dict[str, TrainConfig] = {
    "Seed recipe": SEED_RECIPE,
    "Quick demo": QUICK_DEMO,
    "No dropout": NO_DROPOUT,
    "Two conv blocks": TWO_BLOCKS,
}


# The presets by the names the command line and "try this" links use.
PRESET_NAMES = {"seed": "Seed recipe", "quick": "Quick demo", "no-dropout": "No dropout", "two-blocks": "Two conv blocks"}
# What a link may set, with how to read it from text.
LINK_FIELDS = {"epochs": int, "conv_dropout": float, "dense_dropout": float, "learning_rate": float,
               "batch_size": int, "train_size": int, "seed": int, "optimizer": str, "schedule": str,
               "flip": lambda text: {"1": True, "true": True, "0": False, "false": False}[text.lower()],
               "conv_start": str, "conv_blocks": int, "filters": int, "kernel_size": int, "dense_units": int}


def settings_from_link(params: Mapping[str, str]) -> tuple[Optional[str], TrainConfig, list[str]]:
    """A "try this" link's settings, as `?preset=quick&epochs=3&dense_dropout=0`: the preset's
    name (None when the link names none), its config with the link's values, and one line for
    each value that was left out, saying why. Keys that are not settings are ignored."""
    problems = []
    preset = None
    if "preset" in params:
        preset = PRESET_NAMES.get(params["preset"].strip().lower())
        if preset is None:
            problems.append(f"preset={params['preset']} is not one of {', '.join(PRESET_NAMES)}")
    config = PRESETS[preset] if preset else PRESETS["Seed recipe"]
    for name, read in LINK_FIELDS.items():
        if name not in params:
            continue
        try:
            config = config.replace(**{name: read(params[name].strip())})
        except (KeyError, ValueError) as error:
            reason = str(error) if isinstance(error, ValueError) and name in str(error) else "not a value it can take"
            problems.append(f"{name}={params[name]} was left out: {reason}")
    return preset, config, problems
