"""Watch a ConvNet learn: train the classic Keras CIFAR-10 network from the browser, see its
curves live, then test it on the test set and on your own pictures.

Layout only: each `*_ui()` function draws one part of the page and returns what the user
chose. Training happens in a worker process that this server starts (cifar/service.py); runs,
their queue and their events live in the run store in the runs folder, which the pages only
read. The web process never imports TensorFlow: it predicts with each run's LiteRT copy
(cifar/inference.py).
"""
from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import streamlit as st

from cifar.batches import IMAGE_SHAPE
from cifar.config import (DATA_SOURCE_NAMES, KERNEL_SIZES, LINK_FIELDS, MAX_CONV_BLOCKS, MAX_DENSE_UNITS, MAX_FILTERS,
                          MIN_CONV_BLOCKS, MIN_DENSE_UNITS, MIN_FILTERS, PRESETS, TrainConfig, settings_from_link)
from cifar.data import DataError
from cifar.export import FORMAT_NAMES, FORMATS, download_state
from cifar.folders import datasets_dir, read_image_set, save_image_set, split_image_set
from cifar.images import ImageError
from cifar.inference import PageModel, open_page_model, page_files_ready
from cifar.live import Board, LiveRun, training_status
from cifar.model import LayerRow, layer_table
from cifar.opening import ImportBusy, ModelImports
from cifar.predict import first_of_each_class
from cifar.roles import Visitor, display_name, run_refusal, teacher_refusal, visitor
from cifar.runstore import (FULL_TRAINING_SET, QUEUE_LIMIT, RUNS_KEPT, SAVED, QueueFull, RunRecord, Speeds,
                            expected_seconds, expected_starts)
from cifar.service import LocalTrainer
from cifar.store import ModelFileError, SavedRun, open_run, valid_run_id
from ui.compare_views import COMPARE_TAB, compare_ui
from ui.live_parts import LiveParts, live_mode
from ui.model_views import CURVE_WORDS, curves_ui, duration, gallery_ui, pixels_large, results_ui, uploads_ui
from ui.watch_views import live_snapshot_ui, replay_ui, watch_list_ui

RUNS_DIR = Path(os.environ.get("CIFAR_RUNS_DIR", Path(__file__).resolve().parent / "runs"))
STATUS_SECONDS = 1.5  # how often a page watching a run redraws its progress
CURVES_SECONDS = 5.0  # how often it redraws the queue and the live curves: the figure is the page's biggest message
IDLE_SECONDS = 5.0  # how often a page not watching a run checks the queue
PREPARING_SECONDS = 2.0  # how often a page waiting for a run's copy for the pages looks for it
BATCH_SIZES = [16, 32, 64, 128, 256]
ZIP_UPLOAD_MB = 100  # a class-folder zip, held in the web process while it is read: a classroom's pictures, not a phone's album
EXAMPLE_CLASSES = 20  # example pictures on a first visit: two rows on a projector, of CIFAR-100's 100 classes too
# The sidebar's bounds, for its widgets and for the settings a link brings.
LIMITS = {"epochs": (1, 50), "conv_dropout": (0.0, 0.9), "dense_dropout": (0.0, 0.9), "learning_rate": (1e-5, 1.0),
          "train_size": (100, FULL_TRAINING_SET), "seed": (0, 2**31 - 1), "conv_blocks": (MIN_CONV_BLOCKS, MAX_CONV_BLOCKS),
          "filters": (MIN_FILTERS, MAX_FILTERS), "dense_units": (MIN_DENSE_UNITS, MAX_DENSE_UNITS)}
CONFIG_KEYS = ("epochs", "conv_dropout", "dense_dropout", "learning_rate", "batch_size", "train_size", "seed",
               "optimizer", "schedule", "flip", "conv_start", "conv_blocks", "filters", "kernel_size", "dense_units")


@contextmanager
def shown_as_error(doing: str) -> Iterator[None]:
    """Any unexpected failure becomes one readable line on the page; the traceback goes to the server log."""
    try:
        yield
    except (DataError, ModelFileError, ImageError) as error:
        st.error(str(error))
    except Exception as error:
        logging.getLogger(__name__).exception("failed while %s", doing)
        st.error(f"Something went wrong while {doing}: {type(error).__name__}: {error}")


def secret(name: str) -> Optional[str]:
    try:
        value = st.secrets.get(name)
    except Exception:  # no secrets file at all is the normal case
        return None
    return str(value) if value else None


def data_location() -> Optional[str]:
    """CIFAR10_DATA from st.secrets; from the environment, cifar.data reads it itself (and names it in
    its messages). Never a path typed into the page: a hosted app must not read arbitrary server files."""
    return None if os.environ.get("CIFAR10_DATA") else secret("CIFAR10_DATA")


def number_setting(name: str, default: int) -> int:
    """A host's setting, from the environment (CIFAR_WORKERS) or the secrets (WORKERS)."""
    value = os.environ.get(f"CIFAR_{name}") or secret(name)
    try:
        return max(1, int(value)) if value else default
    except ValueError:
        return default


@st.cache_resource(on_release=LocalTrainer.shutdown)
def trainer() -> LocalTrainer:
    """One per server process: it starts the training workers (ended with it) and owns the run store."""
    if not os.environ.get("CIFAR100_DATA") and (cifar100 := secret("CIFAR100_DATA")):
        os.environ["CIFAR100_DATA"] = cifar100  # read by cifar.data here and in the workers this server starts
    return LocalTrainer(RUNS_DIR, data_location(), workers=number_setting("WORKERS", 1),
                        runs_kept=number_setting("RUNS_KEPT", RUNS_KEPT))


@st.cache_resource
def model_imports() -> ModelImports:
    """The uploaded models being opened on this server: one at a time, each in a process of its own."""
    return ModelImports(RUNS_DIR, data_location())


@st.cache_resource
def board() -> Board:
    """What trains and what waits, shared by every page."""
    # Once per server, after the imports: what is loaded now lives as long as the server, and
    # frozen, Python's collections stop walking through it on every page's poll.
    gc.freeze()
    return Board(trainer().store)


@st.cache_resource(max_entries=8)
def live_run(run_id: str) -> LiveRun:
    """Shared by every page watching this run: one read of its new events, one figure per change."""
    return LiveRun(trainer().store, run_id)


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def page_model(folder: str, modified: float) -> Optional[PageModel]:
    return open_page_model(folder)


@st.cache_resource(max_entries=4, show_spinner="Loading the test images…")
def cached_test_split(data_source: str, dataset: Optional[str], seed: int) -> tuple[Any, Any, list[str]]:
    """A data source's test images and labels, loaded once per server; the training images are not kept here."""
    from cifar.backend import release_freed_memory
    from cifar.datasets import run_test_images

    split = run_test_images(TrainConfig(data_source=data_source, dataset=dataset, seed=seed), RUNS_DIR, data_location())
    release_freed_memory()
    return split


def test_split(config: Optional[TrainConfig] = None) -> tuple[Any, Any, list[str]]:
    """The test images, labels and class names of a run of this config (CIFAR-10's without one)."""
    config = config or TrainConfig()
    # CIFAR's test set is fixed; an image set's test images are picked by the run's seed.
    seed = config.seed if config.data_source == "images" else 0
    return cached_test_split(config.data_source, config.dataset, seed)


def run_test_split(run: SavedRun) -> tuple[Any, Any, list[str]]:
    """The test images the saved run was tested on (an uploaded model's: its CIFAR's)."""
    return test_split(run.config or TrainConfig(data_source=run.metrics.get("data_source", "cifar10")))


def layers_dot(table: list[LayerRow], input_shape: tuple[int, ...], kernel_size: int) -> str:
    """The network as a left-to-right diagram: the picture, each conv and pooling layer, dense, softmax."""
    def shape(dims: tuple[int, ...]) -> str:
        return "×".join(map(str, dims))

    nodes = [f'input [label="picture\\n{shape(input_shape)}"]']
    for row in table:
        if row.kind == "Conv2D":
            label = f"conv {kernel_size}×{kernel_size}\\n{row.output_shape[-1]} filters\\n{shape(row.output_shape)}"
        elif row.kind == "MaxPooling2D":
            label = f"max pool\\n{shape(row.output_shape)}"
        elif row.name == "dense":
            label = f"dense\\n{row.output_shape[0]} units"
        elif row.name == "class_probabilities":
            label = f"softmax\\n{row.output_shape[0]} classes"
        else:
            continue
        nodes.append(f'{row.name} [label="{label}"]')
    names = ["input", *(node.partition(" ")[0] for node in nodes[1:])]
    return ('digraph {\n  rankdir=LR; bgcolor="transparent"; node [shape=box, style="rounded,filled", '
            'fillcolor="#eef3f8", fontname="sans-serif"];\n  ' + "; ".join(nodes) + ";\n  " + " -> ".join(names) + ";\n}")


def network_words(config: TrainConfig, num_classes: int, input_shape: tuple[int, ...]) -> str:
    side = f"{input_shape[0]}×{input_shape[1]}"
    size = f"{config.kernel_size}×{config.kernel_size}"
    if config.conv_blocks == 1:
        conv = (f"A {size} convolution layer with {config.filters} filters looks at every patch of the {side} picture, "
                "max pooling halves it")
    else:
        conv = (f"{config.conv_blocks} blocks of a {size} convolution layer and max pooling look at the {side} picture, "
                f"each block with twice the filters of the one before ({config.filters} first) on a picture halved again")
    return (f"{conv}, a {config.dense_units}-unit dense layer combines everything, and a softmax gives a probability "
            f"for each of the {num_classes} classes. Dropout switches units off at random while training, so the "
            "network cannot memorise the training pictures. Press **Train**, and watch it learn.")


def network_ui(config: TrainConfig, data_error_shown_elsewhere: bool = False) -> None:
    """What the network the sidebar describes is, before anyone trains it: its layers, and the pictures it learns from."""
    num_classes, input_shape = data_shape(config)
    st.graphviz_chart(layers_dot(layer_table(config, num_classes, input_shape), input_shape, config.kernel_size),
                      width="stretch")
    st.markdown(network_words(config, num_classes, input_shape))
    try:
        x_test, y_test, class_names = test_split(config)
    except DataError:
        if not data_error_shown_elsewhere:
            raise
        st.caption("The example pictures need the CIFAR data, which could not be loaded.")
        return
    examples = first_of_each_class(y_test, len(class_names), limit=EXAMPLE_CLASSES)
    st.image([pixels_large(x_test[index], 80) for _, index in examples], width=80,
             caption=[class_names[label] for label, _ in examples])
    which = "each class" if len(examples) == len(class_names) else f"{len(examples)} of its {len(class_names)} classes"
    st.caption(f"One test picture of {which}, {input_shape[0]}×{input_shape[1]} pixels, shown "
               f"{80 / input_shape[0]:g} times as large.")


def data_shape(config: TrainConfig) -> tuple[int, tuple[int, ...]]:
    """The class count and picture shape the next run's network is built for: the data's, or CIFAR-10's
    before the data is loaded."""
    try:
        x_test, _, class_names = test_split(config)
    except Exception:  # the page says why where it needs the data
        return 10, IMAGE_SHAPE
    return len(class_names), tuple(x_test.shape[1:])


def fill_from_preset() -> None:
    fill_from(PRESETS[st.session_state.preset])


def fill_from(config: TrainConfig) -> None:
    for key in CONFIG_KEYS:
        value = getattr(config, key)
        st.session_state[key] = FULL_TRAINING_SET if key == "train_size" and value is None else value


def first_settings() -> None:
    """A new page's sidebar: the Quick demo, or the settings a "try this" link gives, as
    `?preset=quick&epochs=3&dense_dropout=0`; what the sidebar cannot take is said, not used."""
    link = {key: st.query_params[key] for key in ("preset", *LINK_FIELDS) if key in st.query_params}
    if not link:
        st.session_state.preset = "Quick demo"  # the first run is one click and about a minute
        fill_from_preset()
        return
    preset, config, problems = settings_from_link(link)
    base = PRESETS[preset or "Seed recipe"]  # what settings_from_link started from
    for key, (low, high) in LIMITS.items():
        value = getattr(config, key)
        if value is not None and not low <= value <= high:
            problems.append(f"{key}={value} was left out: the sidebar takes {low:g} to {high:g}")
            config = config.replace(**{key: getattr(base, key)})
    if config.batch_size not in BATCH_SIZES:
        problems.append(f"batch_size={config.batch_size} was left out: the sidebar takes {', '.join(map(str, BATCH_SIZES))}")
        config = config.replace(batch_size=base.batch_size)
    st.session_state.preset = preset or config.preset or "Seed recipe"
    fill_from(config)
    if problems:
        st.session_state.link_problems = "The link's settings: " + "; ".join(problems) + "."


def watch_list_choices(config: Optional[TrainConfig]) -> tuple[Optional[np.ndarray], Optional[list[str]]]:
    """The test labels and class names the next run's watch-list is picked from; none when the data
    cannot be loaded (or no image set is uploaded yet)."""
    if config is None:
        return None, None
    try:
        _, y_test, class_names = test_split(config)
    except Exception:  # the page says why where it needs the data; the worker then uses its default list
        return None, None
    return y_test, class_names


def data_ui() -> tuple[str, Optional[str], int]:
    """The sidebar's choice of pictures: CIFAR-10, CIFAR-100, or a zip of the user's own class folders,
    read and checked at once. Returns the source and, for "Your images", the set's id (None until one is
    accepted) and how many training images it gives (0 for CIFAR)."""
    source = st.sidebar.selectbox("Pictures to learn from", list(DATA_SOURCE_NAMES), key="data_source",
                                  format_func=lambda name: {"images": "Your images"}.get(name, DATA_SOURCE_NAMES[name]),
                                  help="CIFAR-10: 10 classes of small photos. CIFAR-100: 100 finer classes of the same "
                                       "kind. Your images: a .zip of class folders, as cat/1.jpg, dog/7.png.")
    if source != "images":
        return source, None, 0
    upload = st.sidebar.file_uploader("A .zip of class folders", type=["zip"], key="dataset_zip",
                                      max_upload_size=ZIP_UPLOAD_MB,
                                      help="One folder per class, named after it, with at least 10 pictures each: "
                                           "cat/1.jpg, dog/7.png… The folder names become the class names; a fifth "
                                           "of each class's pictures is kept for the test.")
    if upload is None:
        st.sidebar.caption("Upload a zip to train on your own pictures.")
        return source, None, 0
    checked = st.session_state.get("dataset_checked")
    if not checked or checked[0] != upload.file_id:
        try:
            image_set = read_image_set(upload, name=upload.name)
            save_image_set(datasets_dir(RUNS_DIR), image_set)  # the run, and its saved page, find it by its id
            training = len(split_image_set(image_set.labels, 0)[0])
            checked = (upload.file_id, image_set.id, f"{upload.name}: {image_set.summary}.", training)
        except DataError as error:
            checked = (upload.file_id, None, str(error), 0)
        st.session_state.dataset_checked = checked
    _, set_id, words, training = checked
    (st.sidebar.success if set_id else st.sidebar.error)(words)
    return source, set_id, training


def visitor_ui() -> Visitor:
    """Who this page is: its session (the owner of the runs it queues), a name, and whether it is the teacher's."""
    if "session" not in st.session_state:
        st.session_state.session = uuid.uuid4().hex
    code = secret("TEACHER_CODE") or os.environ.get("CIFAR_TEACHER_CODE")
    st.sidebar.text_input("Your name (shown in the queue)", key="your_name", max_chars=40)
    entered = ""
    if code:
        entered = st.sidebar.text_input("Teacher code", key="teacher_code", type="password",
                                        help="The teacher can stop or cancel any run, clear the queue, and pin or "
                                             "delete saved runs. Everyone else runs and stops their own.")
    who = visitor(st.session_state.session, st.session_state.your_name or "", entered, code)
    # Always one slot, filled or not: an element that comes and goes would shift every widget below it.
    role = st.sidebar.empty()
    if code and entered and not who.teacher:
        role.caption("That is not the teacher code.")
    elif code and who.teacher:
        role.caption("You are the teacher: you can stop any run.")
    return who


def run_setup_ui(source: str, image_set: Optional[str]) -> Optional[TrainConfig]:
    """The sidebar's settings for the chosen data (its source, and the id of an uploaded set); returns the
    run they describe, or None (and says why) if they cannot train."""
    if "epochs" not in st.session_state:
        first_settings()
    elif lost := [key for key in CONFIG_KEYS if key not in st.session_state]:
        # A widget's value Streamlit dropped would come back as its minimum (100 images, a learning rate of 1e-5).
        logging.getLogger(__name__).warning("sidebar settings lost from the session: %s", ", ".join(lost))
        preset = PRESETS.get(st.session_state.get("preset"), PRESETS["Seed recipe"])
        for key in lost:
            value = getattr(preset, key)
            st.session_state[key] = FULL_TRAINING_SET if key == "train_size" and value is None else value
    # Each run sends the settings' values with their widgets again. A page whose first run's widgets never
    # reached the browser (a rerun overtook them) would otherwise draw them at their defaults, the minimums,
    # and send those back with its next click: a 1-epoch run with a learning rate of 1e-5. (Sent only until
    # one run reached the page whole, 1 fresh page in 10 still showed the minimums.) The cost: arrow keys
    # pressed faster than the page reruns can lose a step, which the slider then shows.
    for key in ("preset", *CONFIG_KEYS):
        st.session_state[key] = st.session_state[key]
    if problems := st.session_state.get("link_problems"):  # every run: a line that came and went would shift the widgets
        st.sidebar.warning(problems)
    st.sidebar.radio("Preset", list(PRESETS), key="preset", on_change=fill_from_preset,
                     help="Seed recipe: the tutorial as written. Quick demo: the same network, its conv filters "
                          "started as patterns of the pictures and trained with Adam and a cosine schedule: "
                          "about 61% test accuracy after one epoch. No dropout: watch it overfit. Two conv blocks: "
                          "the Quick demo with a second conv block, for 3 epochs: what a deeper network buys. The Compare "
                          "runs tab's dropout experiment trains with and without dropout in one click, side by side.")
    st.sidebar.slider("Epochs", *LIMITS["epochs"], key="epochs", help="Passes over the training images.")
    st.sidebar.slider("Conv dropout", *LIMITS["conv_dropout"], step=0.05, key="conv_dropout",
                      help="Share of the conv layer's outputs switched off at random during training.")
    st.sidebar.slider("Dense dropout", *LIMITS["dense_dropout"], step=0.05, key="dense_dropout",
                      help="Share of the dense layer's units switched off at random during training.")
    with st.sidebar.expander("More settings"):
        low, high = LIMITS["learning_rate"]
        st.number_input("Learning rate", min_value=low, max_value=high, format="%.4f", key="learning_rate")
        st.selectbox("Batch size", BATCH_SIZES, key="batch_size")
        low, high = LIMITS["train_size"]
        st.number_input("Training images", min_value=low, max_value=high, step=1000, key="train_size",
                        help="Train on a random subset for a quicker demo; 50,000 is the whole training set.")
        low, high = LIMITS["seed"]
        st.number_input("Seed", min_value=low, max_value=high, step=1, key="seed",
                        help="The same seed and settings train the same model.")
        st.selectbox("Optimizer", ["sgd", "adam"], key="optimizer", format_func=str.upper)
        st.selectbox("Learning-rate schedule", ["constant", "cosine"], key="schedule")
        st.checkbox("Mirror training pictures at random", key="flip",
                    help="Data augmentation: each epoch, half the training pictures are flipped left to right.")
        st.selectbox("Conv filters start as", ["random", "pca"], key="conv_start",
                     format_func={"random": "random (Keras)", "pca": "picture patterns (PCA)"}.get,
                     help="Random: Keras's default start. Picture patterns: the principal components of 3x3 patches "
                          "of the training pictures, and their negatives. "
                          "The conv layer starts out seeing brightness, edges and colour contrasts "
                          "instead of random mixtures of pixels, so the first epoch learns much faster. The filters "
                          "are then trained like any other weights.")
    network = st.sidebar.expander("Network")
    with network:
        network_settings_ui()
    values = {key: st.session_state[key] for key in CONFIG_KEYS}
    values["train_size"] = None if values["train_size"] >= FULL_TRAINING_SET else int(values["train_size"])
    try:
        config = TrainConfig(**values)
    except ValueError as error:  # settings each fine alone but not together, such as a PCA start for 64 3x3 filters
        st.sidebar.error(f"These settings cannot train: {error}.")
        return None
    with network:
        shown = config if source == "images" and image_set is None else config.replace(data_source=source, dataset=image_set)
        total = layer_table_ui(shown)
    st.sidebar.caption(f"The network: {config.network_in_words()}, {total:,} parameters (its layers are under Network).")
    return config


def network_settings_ui() -> None:
    """The network's shape: conv blocks, their filters and kernel, the dense layer. The seed's is one
    block of 32 3x3 filters and 512 dense units."""
    st.slider("Conv blocks", *LIMITS["conv_blocks"], key="conv_blocks",
              help="Each block is a convolution layer, dropout and max pooling, which halves the picture. More blocks "
                   "see larger shapes and leave fewer numbers for the dense layer.")
    low, high = LIMITS["filters"]
    st.number_input("Filters in the first block", min_value=low, max_value=high, step=8, key="filters",
                    help="Each later block has twice as many.")
    st.selectbox("Kernel size", KERNEL_SIZES, key="kernel_size", format_func=lambda size: f"{size}×{size}",
                 help="The patch of the picture each filter looks at.")
    low, high = LIMITS["dense_units"]
    st.number_input("Dense units", min_value=low, max_value=high, step=64, key="dense_units",
                    help="Units of the dense layer that combines what the conv blocks found.")


def layer_table_ui(config: TrainConfig) -> int:
    """The layers the settings build, with their output shapes and parameters, computed without Keras;
    returns the total."""
    num_classes, input_shape = data_shape(config)
    table = layer_table(config, num_classes, input_shape)
    total = sum(row.parameters for row in table)
    # Markdown, in small type: it wraps into the sidebar's width, where a dataframe hides its last columns behind a scroll.
    lines = ["| Layer, kind | Output | Parameters |", "|:--|:--|--:|"]
    lines += [f"| {row.name}<br><span style='color:#777'>{row.kind}</span> | {'×'.join(map(str, row.output_shape))} | "
              f"{row.parameters:,} |" for row in table]
    st.markdown('<div class="layer-table">\n\n' + "\n".join(lines) + "\n\n</div>", unsafe_allow_html=True)
    st.caption(f"{total:,} parameters in all, for {num_classes} classes of {'×'.join(map(str, input_shape))} pictures.")
    return total


def show_run(run_id: str) -> None:
    st.session_state.pop("showing_latest", None)
    st.session_state.run_id = run_id
    st.query_params["run"] = run_id  # a refresh or a shared link comes back to this run


def current_run_id(service: LocalTrainer) -> Optional[str]:
    """The run this page shows: its own, the one in the URL, else whatever is training now or next."""
    if "run_id" not in st.session_state:
        from_url = st.query_params.get("run")
        if from_url:
            st.session_state.run_id = from_url  # even an unknown id: the page then says it does not know it
        elif upcoming := service.store.running() or service.store.queue():
            show_run(upcoming[0].run_id)
        elif latest := latest_saved_run(service):
            show_run(latest.run_id)
            st.session_state.showing_latest = True
    return st.session_state.get("run_id")


def latest_saved_run(service: LocalTrainer, besides: Optional[str] = None) -> Optional[SavedRun]:
    """The newest finished or stopped run with a model, other than `besides`."""
    for record in service.store.runs(SAVED):
        if record.run_id != besides and (run := open_run(RUNS_DIR, record.run_id)) is not None:
            return run
    return None


def stop_target(on_screen: Optional[RunRecord], running: list[RunRecord]) -> Optional[RunRecord]:
    """What Stop acts on: the run on screen if it is queued or training, else the run training now."""
    if on_screen is not None and on_screen.active:
        return on_screen
    return running[0] if running else None


def controls_ui(target: Optional[RunRecord], busy: bool, config: Optional[TrainConfig], speeds: Speeds) -> tuple[bool, bool]:
    left, right = st.sidebar.columns(2)
    # Fixed labels: a button whose label changes is a new element, and the page would briefly show two.
    train = left.button("Train", key="train", type="primary", width="stretch", disabled=config is None)
    stop = right.button("Stop", key="stop", disabled=target is None, width="stretch")
    running = target is not None and target.state == "running"
    left, right = st.sidebar.columns(2)
    left.button("Pause", key="pause", disabled=not running or target.pause_requested, width="stretch",
                on_click=pause_run, args=(target, True),
                help="Training waits at its next step, with everything it has learned, until Resume.")
    right.button("Resume", key="resume", disabled=not running or not target.pause_requested, width="stretch",
                 on_click=pause_run, args=(target, False))
    words = []
    speed = speeds.of(config) if config is not None else None  # None: the sidebar says why these settings cannot train
    if config is not None and speed:  # a promise from this machine's own measured speed of this network, or none at all
        words.append(f"These settings take about {duration(expected_seconds(config, speed))} here "
                     f"(this server last trained this network at {speed:,.0f} images per second).")
    elif config is not None and speeds:
        words.append("This server has not trained this network yet, so it cannot say how long it takes.")
    if busy:
        words.append("A run is training: a new one joins the queue and starts after it.")
    st.sidebar.caption(" ".join(words))  # always drawn, even empty: the widgets below it keep their place
    return train, stop


def queue_run(service: LocalTrainer, config: TrainConfig, who: Visitor) -> str:
    """Queue a run as this page's (its owner may stop it), following the sidebar's watch-list;
    raises QueueFull when the queue is full."""
    run_id = service.submit(config, who.session, display_name(who.name, who.teacher and who.code_set),
                            st.session_state.get("watch_items"))
    board().changed()
    return run_id


def submit_run(service: LocalTrainer, config: TrainConfig, who: Visitor) -> None:
    try:
        run_id = queue_run(service, config, who)
    except QueueFull as full:
        st.sidebar.error(str(full))
        return
    show_run(run_id)
    st.rerun()  # the page was drawn for the previous run: draw it for this one


def pause_run(target: RunRecord, paused: bool) -> None:
    """Pause's and Resume's callback: only the teacher or the run's owner may."""
    refusal = run_refusal(st.session_state.visitor, "pause" if paused else "resume", target.owner)
    if refusal:
        st.session_state.refusal = refusal
        st.toast(refusal)
        return
    trainer().pause(target.run_id, paused)
    board().changed()


def let_queue_pass_ui(target: Optional[RunRecord], queued: list[RunRecord], who: Visitor) -> None:
    """While a run is paused, queued runs wait for it, unless the teacher lets them go first."""
    if target is None or not target.pause_requested or not queued:
        return
    if target.queue_may_pass:
        st.sidebar.caption("Queued runs are training while this run is paused; it goes on when resumed.")
        return
    if st.sidebar.button("Let queued runs go first", key="let_queue_pass", width="stretch",
                         help="The paused run waits, with all it has learned, while the queue trains."):
        if refusal := teacher_refusal(who, "let queued runs go before a paused one"):
            st.sidebar.warning(refusal)
        else:
            trainer().store.let_queue_pass(target.run_id)
            board().changed()
            st.rerun()


def stop_run(service: LocalTrainer, target: RunRecord, who: Visitor) -> None:
    action = "cancel" if target.state == "queued" else "stop"
    refusal = run_refusal(who, action, target.owner)
    if refusal:
        st.sidebar.warning(refusal)
        st.toast(refusal)  # the sidebar's line may be below the fold
    elif action == "cancel":
        service.cancel(target.run_id)
    else:
        service.stop(target.run_id)


def queue_ui(service: LocalTrainer, who: Visitor, live: LiveParts, seconds: float) -> tuple[Any, ...]:
    """Every page's view of what trains now and what waits: whose, what settings, when it should
    start. The words are a live part; the buttons are drawn with the page, which is drawn again
    whenever the queue changes. Returns the runs it showed."""
    running, queued, _ = board().snapshot()
    drawn = queue_ids(running, queued)
    if not running and not queued:
        live.add(seconds, queue_words, drawn)  # draws nothing until a run appears, then the page again
        return drawn
    with st.container(border=True):
        live.add(seconds, queue_words, drawn)
        mine = [(position, run) for position, run in enumerate(queued, start=1)
                if run_refusal(who, "cancel", run.owner) is None]
        clear = who.teacher and who.code_set and len(queued) > 0
        if not mine and not clear:
            return drawn
        with st.container(horizontal=True, gap="small"):
            for position, run in mine:
                if st.button(f"Cancel number {position}", key=f"cancel_{run.run_id}"):
                    service.cancel(run.run_id)
                    board().changed()
                    st.rerun()
            if clear and st.button("Clear the queue", key="clear_queue"):
                service.store.clear_queue()
                board().changed()
                st.rerun()
    return drawn


def queue_ids(running: list[RunRecord], queued: list[RunRecord]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(run.run_id for run in running), tuple(run.run_id for run in queued)


def queue_words(drawn: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
    """The queue in words, drawn again every few seconds; the whole page again when it changed."""
    running, queued, speeds = board().snapshot()
    if queue_ids(running, queued) != drawn:
        st.rerun(scope="app")  # a run joined, started, ended or left: its buttons change too
    if not running and not queued:
        return
    starts = expected_starts(running, queued, speeds)
    lines = [f"**Training now:** {run.owner_name or 'a visitor'} · {run.config.in_words()} · "
             f"{run.progress.get('progress', 0.0):.0%} done" for run in running] or ["**Nothing is training.**"]
    for position, (run, start) in enumerate(zip(queued, starts), start=1):
        when = "after the runs before it" if start is None else ("next" if start < 5 else f"in about {duration(start)}")
        lines.append(f"**{position}.** {run.owner_name or 'a visitor'} · {run.config.in_words()} · starts {when}")
    st.markdown("  \n".join(lines))
    if queued:
        full = " The queue is full." if len(queued) >= QUEUE_LIMIT else ""
        st.caption(f"{len(queued)} of at most {QUEUE_LIMIT} runs waiting.{full} One run trains at a time.")


def activity_ui(run_id: str, shown_state: str, shown_pause: bool) -> None:
    """The part of the page that redraws most often: the run on screen while it trains (one
    element, so a class watching costs the server little), or its place while it waits."""
    record = board().run(run_id)
    if record is None or record.state != shown_state or record.pause_requested != shown_pause:
        st.rerun(scope="app")  # it started, ended, paused or resumed: the rest of the page changes too
    if record.state == "running":
        st.progress(*training_status(record))
    elif record.state == "queued":
        waiting = [run.run_id for run in board().snapshot()[1]]
        place = waiting.index(record.run_id) + 1 if record.run_id in waiting else 1
        st.info(f"This run is queued, number {place} in line: it starts when the runs before it end.")


def live_curves_ui(live: LiveParts, run_id: str, epochs: int) -> None:
    """The learning curves so far, from the events every watcher shares."""
    run = live_run(run_id)
    run.refresh()
    if run.batches():
        curves_ui(run.figures(epochs), live.key("live_curves"))


def live_watch_ui(run_id: str, config: TrainConfig) -> None:
    """The newest snapshot of the watch-list and the filters; they change once an epoch."""
    run = live_run(run_id)
    run.refresh()
    watch_lists = run.of_kind("watch_list")
    if not watch_lists:
        return  # no snapshot before the worker has the data; should it fail, the run's own message says why
    with shown_as_error("showing the watch-list"):
        x_test, _, class_names = test_split(config)
        live_snapshot_ui(run.of_kind("snapshot"), watch_lists[-1]["items"], class_names, x_test, config.epochs)


def ended_without_model_ui(record: RunRecord) -> None:
    """A run that ended with no model to show: interrupted, failed, cancelled or stopped too early."""
    if record.state == "failed":
        st.error(record.message)
    elif record.state == "interrupted":
        st.warning(record.message)
    else:
        st.info(record.message or "This run ended before its first training step: nothing was trained or saved.")
    live = live_run(record.run_id)
    live.refresh()
    batches = live.batches()
    if batches:
        trained = batches[-1]["progress"] * record.config.epochs
        curves_ui(live.figures(record.config.epochs, x_max=max(trained, 1)), f"curves_{record.run_id}")


def saved_runs_ui(service: LocalTrainer, current: Optional[str], who: Visitor) -> None:
    records = service.store.runs(SAVED)
    runs = {record.run_id: run for record in records if (run := open_run(RUNS_DIR, record.run_id)) is not None}
    if not runs:
        st.info("No saved runs yet: every finished or stopped run is kept here.")
        return
    pinned = {record.run_id for record in records if record.pinned}
    ids = list(runs)
    labels = {run_id: ("📌 " if run_id in pinned else "") + runs[run_id].label for run_id in ids}
    on_screen = (current, current in ids)
    if st.session_state.get("saved_run_for") != on_screen or st.session_state.get("saved_run") not in ids:
        # Another run on screen, or the one on screen just saved: the list starts at it, not at
        # whatever this page picked before. Set, not forgotten: the browser would send the old pick back.
        st.session_state.saved_run_for = on_screen
        st.session_state.saved_run = current if current in ids else ids[0]
    chosen = st.selectbox("Saved runs, newest first", ids, format_func=labels.get, key="saved_run")
    run = runs[chosen]
    open_button, download = st.columns(2)
    if open_button.button("Open this run", key="open_run", disabled=chosen == current, width="stretch"):
        show_run(chosen)
        st.rerun()
    download.download_button("Download its model (.keras)", data=run.model_path.read_bytes, key="download_model",
                             file_name=f"cifar-convnet-{chosen}.keras", mime="application/octet-stream", width="stretch")
    downloads_ui(run)
    st.caption(f"{'This is the run on screen. ' if chosen == current else ''}{run.settings_text}.")
    pin, delete = st.columns(2)
    is_pinned = chosen in pinned
    if pin.button("Unpin" if is_pinned else "Pin (never pruned)", key="pin_run", width="stretch"):
        if refusal := teacher_refusal(who, "pin runs"):
            st.warning(refusal)
        else:
            service.store.pin(chosen, not is_pinned)
            st.rerun()
    if delete.button("Delete this run", key="delete_run", width="stretch"):
        if refusal := teacher_refusal(who, "delete runs"):
            st.warning(refusal)
        else:
            service.store.delete(chosen)
            if chosen == current:
                st.session_state.pop("run_id", None)
                st.query_params.pop("run", None)
            st.rerun()
    st.caption(f"The newest {service.runs_kept} runs are kept, and pinned ones; older runs are deleted.")


def downloads_ui(run: SavedRun) -> None:
    """The run's model for other runtimes, when the worker has made it, and otherwise why not."""
    notes = []
    for column, name in zip(st.columns(len(FORMATS)), FORMATS):
        state = download_state(run.folder, name)
        label = f"Download {'for' if name == 'litert' else 'as'} {FORMAT_NAMES[name]} ({FORMATS[name]})"
        if state.path is None:
            label += ": not ready" if state.pending else ": could not be made"
            notes.append(f"{FORMAT_NAMES[name]}: {state.failure}" if state.failure else "")
        column.download_button(label, data=state.path.read_bytes if state.path else b"", key=f"download_{name}",
                               file_name=f"cifar-convnet-{run.run_id}{FORMATS[name]}", disabled=state.path is None,
                               mime="application/octet-stream", width="stretch")
    words = ("LiteRT runs on phones and small devices, ONNX in onnxruntime and many other runtimes; both take "
             "32×32 pixels as the .keras model does and give the class probabilities.")
    if "" in notes:
        words += (" The training worker makes these files when no run is training or waiting, so they are not "
                  "ready yet; open this tab again later.")
    st.caption(" ".join([words, *filter(None, notes)]))


def model_upload_ui(live: LiveParts) -> None:
    """Open a model someone brings: tested in a process of its own, it becomes a saved run."""
    st.markdown("**Open a model**")
    upload = st.file_uploader("A Keras classifier of 32×32 colour pictures (.keras)", type=["keras"],
                              key="model_upload", help="Loaded with Keras's safe mode, tested on the test set and "
                              "kept as a saved run marked as uploaded: its results, test images and your pictures.")
    if upload is not None and st.session_state.get("model_upload_seen") != upload.file_id:
        st.session_state.model_upload_seen = upload.file_id  # a rerun with the same file does not open it again
        st.session_state.pop("model_upload_message", None)
        try:
            st.session_state.model_import = model_imports().start(upload.getvalue(), upload.name)
        except (ModelFileError, ImportBusy) as error:
            st.session_state.model_upload_message = ("error", str(error))
    if "model_import" in st.session_state:
        state = model_imports().state(st.session_state.model_import)
        if state is not None and not state.done:
            live.add(PREPARING_SECONDS, model_import_ui, st.session_state.model_import)
            return
        del st.session_state.model_import
        if state is not None and state.failed:
            st.session_state.model_upload_message = ("error", state.message)
        elif state is not None:
            st.session_state.model_upload_message = ("success", f"{state.message} Its results are on screen.")
            st.session_state.model_upload_opened = state.run_id
            show_run(state.run_id)
            st.rerun()
    if upload is None and st.session_state.get("model_upload_message", ("",))[0] == "error":
        del st.session_state.model_upload_message  # it stays while the file that caused it does
    if message := st.session_state.get("model_upload_message"):
        if message[0] == "error":
            st.error(message[1])
        elif st.session_state.get("run_id") == st.session_state.get("model_upload_opened"):  # while that run is on screen
            st.success(message[1])


def model_import_ui(import_id: str) -> None:
    """An upload's progress while its process works; the whole page again once it is done."""
    state = model_imports().state(import_id)
    if state is None or state.done:
        st.rerun(scope="app")
    st.info(f"Opening the model: {state.message}")


def standing_in_ui(tested: SavedRun) -> None:
    accuracy = tested.metrics.get("test_accuracy")
    scored = f", {accuracy:.1%} on the test set" if isinstance(accuracy, (int, float)) else ""
    st.info(f"The run on screen is not finished yet, so this tab uses the last finished run: **{tested.title}** "
            f"({tested.epochs_text}{scored}).")


def run_model(run: Optional[SavedRun], live: LiveParts) -> tuple[Optional[PageModel], Optional[list[str]]]:
    if run is None:
        return None, None
    if not page_files_ready(run.folder):
        st.info("This run's model is being prepared for the page; it is ready in a few seconds.")
        live.add(PREPARING_SECONDS, wait_for_page_files, str(run.folder))
        return None, None
    try:
        model = page_model(str(run.folder), run.model_path.stat().st_mtime)
    except (ModelFileError, OSError, ValueError) as error:
        st.error(f"This run's model could not be opened: {error}")
        return None, None
    if model is None:
        st.info("This run's model is being prepared for the page; it is ready in a few seconds.")
        return None, None
    return model, run.metrics.get("class_names")


def wait_for_page_files(folder: str) -> None:
    """Polls while the worker writes the run's copy for the pages, then draws the page again with it."""
    if page_files_ready(folder):
        st.rerun(scope="app")


def main() -> None:
    st.set_page_config(page_title="Watch a ConvNet learn", page_icon="🧠", layout="wide")
    # Less empty space above the title, so the live curves fit a 1280x720 projector without scrolling.
    # Smaller metric figures too: the results' curves then fit on the first screen as well.
    st.html("<style>[data-testid='stMainBlockContainer']{padding-top:3.25rem}"
            "[data-testid='stMetricValue']{font-size:1.75rem}"
            ".layer-table table{font-size:0.7rem;width:100%}.layer-table td,.layer-table th{padding:2px 3px}</style>")
    service = trainer()
    who = st.session_state.visitor = visitor_ui()  # the pause buttons' callbacks ask who pressed them
    source, image_set, set_training_images = data_ui()
    config = run_setup_ui(source, image_set)
    # None until the chosen data can be trained on: "Your images" needs an accepted zip first.
    wanted = (None if config is None or (source == "images" and image_set is None)
              else config.replace(data_source=source, dataset=image_set))
    test_images = (source, image_set, st.session_state.get("seed", 0) if source == "images" else 0)
    # Read when a run is queued, by a button's callback too.
    st.session_state.watch_items = watch_list_ui(*watch_list_choices(wanted), source=test_images)
    run_id = current_run_id(service)
    record = service.run(run_id) if run_id and valid_run_id(run_id) else None
    running, queued, speeds = board().snapshot()
    target = stop_target(record, running)
    # A set's size, not CIFAR's 50,000, for how long the run should take.
    estimated = wanted or config
    if estimated is not None and set_training_images:
        estimated = estimated.replace(train_size=min(estimated.train_size or set_training_images, set_training_images))
    train, stop = controls_ui(target, bool(running or queued), estimated, speeds)
    if refusal := st.session_state.pop("refusal", None):
        st.sidebar.warning(refusal)
    let_queue_pass_ui(target, queued, who)
    if stop and target is not None:
        stop_run(service, target, who)
    if train and config is not None and wanted is None:
        st.sidebar.error("Upload a .zip of class folders first, to train on your own pictures.")
    elif train and wanted is not None:
        submit_run(service, wanted, who)
    st.markdown("### Watch a ConvNet learn")
    if run_id is None:  # a first visit: what the network is, open, before anything else
        with st.expander("What is this network?", expanded=True), shown_as_error("showing the network"):
            network_ui(wanted or config or PRESETS["Seed recipe"])
    run = open_run(RUNS_DIR, run_id) if run_id else None
    watching = record is not None and record.active
    live = LiveParts(stream=live_mode(secret("LIVE_UPDATES")) == "stream")
    if watching:
        live.add(STATUS_SECONDS, activity_ui, record.run_id, record.state, record.pause_requested)
    queue_shown = queue_ui(service, who, live, CURVES_SECONDS if watching else IDLE_SECONDS)
    if run_id is None:
        st.info("Choose settings in the sidebar and press **Train**. The Quick demo preset trains a good model in one epoch.")
    elif st.session_state.get("showing_latest") and run is not None and record is not None and record.state in SAVED:
        if running or queued:  # started since this page opened, by a button elsewhere on it or by someone else
            st.info("This is the latest saved run. Runs have started since: the queue above says which, and Compare "
                    "runs follows them.")
        else:
            st.info("Nothing is training now, so this is the latest saved run. Press **Train** to start a new one.")
    elif record is None and run is None:
        st.warning(f"There is no run {run_id!r} on this server: it may have been deleted. Choose settings and press "
                   "**Train**, or open a saved run.")
    elif record is not None and record.state == "running":
        st.caption(CURVE_WORDS)
        live.add(CURVES_SECONDS, live_curves_ui, live, record.run_id, record.config.epochs)
        live.add(CURVES_SECONDS, live_watch_ui, record.run_id, record.config)
    elif record is not None and record.state not in SAVED and record.state != "queued":
        ended_without_model_ui(record)
    # While this run trains (or waits), the class keeps testing the last model that finished.
    tested = run if run is not None else latest_saved_run(service, besides=run_id) if watching else None
    # Always there, empty or not: were a message above the tabs to come and go, the tabs would be
    # drawn anew and jump back to the first one.
    with st.container():
        model, class_names = run_model(tested, live)
    # Keyed and tracked, the tab a user chose stays chosen when the page above it changes (a run
    # starting or ending); untracked tabs jumped back to the first. Every tab is still drawn, so
    # an upload or a gallery filter survives a look at another tab.
    results, test_set, pictures, saved, compared = st.tabs(["Results", "Test images", "Your pictures", "Saved runs",
                                                            COMPARE_TAB], key="tab", on_change="rerun")
    with results, shown_as_error("showing the results"):
        if run is not None:
            results_ui(run, lambda: run_test_split(run), model)  # model: the run's own, as tested is run whenever run is set
            x_test, _, class_names = run_test_split(run)
            if run.metrics.get("class_names", class_names) == class_names:  # its watched test images are these
                replay_ui(run.metrics.get("snapshots", []), run.metrics.get("watch_list", []), class_names, x_test,
                          run.metrics.get("config", {}).get("epochs", 1))
        else:
            st.info("The test results appear here when this run finishes or is stopped.")
    with test_set, shown_as_error("showing the test images"):
        if tested is not run and tested is not None:
            standing_in_ui(tested)
        if tested is not None and model is not None:
            gallery_ui(lambda: run_test_split(tested), tested, model)
        else:
            st.info("Train a model or open a saved run to test it on the test images.")
    with pictures, shown_as_error("classifying your pictures"):
        if tested is not run and tested is not None:
            standing_in_ui(tested)
        uploads_ui(model, class_names)
    with saved, shown_as_error("listing the saved runs"):
        saved_runs_ui(service, run_id, who)
        model_upload_ui(live)
    with compared, shown_as_error("comparing runs"):
        compare_ui(service.store, board(), RUNS_DIR, live, CURVES_SECONDS, live_run,
                   lambda config: queue_run(service, config, who), service.cancel, shown=compared.open is not False)
    if run_id is not None:  # below the run, so that its curves fit the first screen of a projector
        with st.expander("What is this network?"), shown_as_error("showing the network"):
            network_ui(wanted or config or PRESETS["Seed recipe"], data_error_shown_elsewhere=True)  # a run that needs the data says why it has none
    # Streaming, the script stays here, redrawing what changes, until the page must be drawn anew.
    live.follow(layout=(run_id, record.state if record else None, record.pause_requested if record else None, queue_shown,
                        tested.run_id if tested else None, model is None))


if __name__ == "__main__":
    main()
