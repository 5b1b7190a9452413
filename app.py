"""Watch a ConvNet learn: train the classic Keras CIFAR-10 network from the browser, see its
curves live, then test it on the test set and on your own pictures.

Layout only: each `*_ui()` function draws one part of the page and returns what the user
chose. Training runs in `cifar.runner`'s background job, which never calls Streamlit; the
page polls it from a fragment. TensorFlow is imported in the background two seconds after the
first page is drawn, so the controls never wait for it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from cifar import charts
from cifar.config import PRESETS, TrainConfig
from cifar.data import DataError
from cifar.images import ImageError
from cifar.runner import JobBoard, TrainingBusy, TrainingJob
from cifar.store import ModelFileError, SavedRun, list_runs, open_run
from ui.model_views import duration, gallery_ui, results_ui, uploads_ui

RUNS_DIR = Path(os.environ.get("CIFAR_RUNS_DIR", Path(__file__).resolve().parent / "runs"))
FULL_TRAINING_SET = 50_000  # CIFAR-10's training images: the "Training images" box at this value means all of them
# TensorFlow's import, started as the first page is drawn, held the GIL while the server sent that
# page: the controls showed 3.8-4.0 s after `streamlit run` instead of 2.3 s (bench/app_start.py).
# Started 2 s later they show at 2.4 s, and a first Train still finds TensorFlow loaded or loading.
WARM_UP_AFTER_SECONDS = 2.0
POLL_SECONDS = 0.7  # how often the live view asks the job for news while it trains
CONFIG_KEYS = ("epochs", "conv_dropout", "dense_dropout", "learning_rate", "batch_size", "train_size", "seed",
               "optimizer", "schedule", "flip", "conv_start")


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


def data_location() -> Optional[str]:
    """CIFAR10_DATA from st.secrets; from the environment, cifar.data reads it itself (and names it in
    its messages). Never a path typed into the page: a hosted app must not read arbitrary server files."""
    if os.environ.get("CIFAR10_DATA"):
        return None
    try:
        return st.secrets.get("CIFAR10_DATA")
    except Exception:  # no secrets file at all is the normal case
        return None


@st.cache_resource
def job_board() -> JobBoard:
    """One per server process: every visitor shares its single training slot and its dataset."""
    return JobBoard(RUNS_DIR, data_location())


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def saved_model(path: str, modified: float) -> tuple[Any, dict[str, Any]]:
    from cifar.store import load_model

    return load_model(path)


def fill_from_preset() -> None:
    preset = PRESETS[st.session_state.preset]
    for key in CONFIG_KEYS:
        value = getattr(preset, key)
        st.session_state[key] = FULL_TRAINING_SET if key == "train_size" and value is None else value


def run_setup_ui() -> TrainConfig:
    """The sidebar's settings; returns the run they describe."""
    if "epochs" not in st.session_state:
        st.session_state.preset = "Seed recipe"
        fill_from_preset()
    st.sidebar.radio("Preset", list(PRESETS), key="preset", on_change=fill_from_preset,
                     help="Seed recipe: the tutorial as written. Quick demo: the same network, its conv filters "
                          "started as patterns of the pictures and trained with Adam and a cosine schedule: "
                          "about 61% test accuracy after one epoch. No dropout: watch it overfit.")
    st.sidebar.slider("Epochs", 1, 50, key="epochs", help="Passes over the training images.")
    st.sidebar.slider("Conv dropout", 0.0, 0.9, step=0.05, key="conv_dropout",
                      help="Share of the conv layer's outputs switched off at random during training.")
    st.sidebar.slider("Dense dropout", 0.0, 0.9, step=0.05, key="dense_dropout",
                      help="Share of the 512 dense units switched off at random during training.")
    with st.sidebar.expander("More settings"):
        st.number_input("Learning rate", min_value=1e-5, max_value=1.0, format="%.4f", key="learning_rate")
        st.selectbox("Batch size", [16, 32, 64, 128, 256], key="batch_size")
        st.number_input("Training images", min_value=100, max_value=FULL_TRAINING_SET, step=1000, key="train_size",
                        help="Train on a random subset for a quicker demo; 50,000 is the whole training set.")
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed",
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
    values = {key: st.session_state[key] for key in CONFIG_KEYS}
    values["train_size"] = None if values["train_size"] >= FULL_TRAINING_SET else int(values["train_size"])
    return TrainConfig(**values)


def controls_ui(board: JobBoard) -> tuple[bool, bool]:
    active = board.active_job()
    left, right = st.sidebar.columns(2)
    train = left.button("Train", key="train", type="primary", width="stretch")
    stop = right.button("Stop", key="stop", disabled=active is None, width="stretch")
    return train, stop


def start_training(board: JobBoard, config: TrainConfig) -> None:
    running = board.active_job()
    if running is None:
        try:
            running = board.start(config)
        except TrainingBusy:  # someone else pressed Train a moment earlier
            running = board.active_job()
        else:
            show_run(running.run_id)
            st.rerun()  # the sidebar was drawn before this run existed: redraw it so Stop is enabled
    st.sidebar.warning("A training run is already in progress on this server: you are watching it now. "
                       "Wait for it to finish, or stop it, before starting another.")
    if running is not None:
        show_run(running.run_id)


def show_run(run_id: str) -> None:
    st.session_state.run_id = run_id
    st.query_params["run"] = run_id  # a refresh or a shared link comes back to this run


def current_run_id(board: JobBoard) -> Optional[str]:
    """The run this page shows: its own, the one in the URL, else whatever is training now."""
    if "run_id" not in st.session_state:
        from_url = st.query_params.get("run")
        if from_url and (board.get(from_url) or open_run(RUNS_DIR, from_url)):
            st.session_state.run_id = from_url
        elif (active := board.active_job()) is not None:  # looked up once: it may end between two lookups
            show_run(active.run_id)
    return st.session_state.get("run_id")


@st.cache_resource(max_entries=4, show_spinner=False)
def live_curves(run_id: str, event_count: int, _events: tuple, epochs: int) -> Any:
    """The live figure, built once per new event and shared by every viewer: a classroom of
    students polling the same run costs one figure build, not thirty."""
    batches = [e for e in _events if e["event"] == "batch"]
    history = [{k: v for k, v in e.items() if k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")}
               for e in _events if e["event"] == "epoch"]
    return charts.learning_curves(batches, history, epochs)


def live_ui(board: JobBoard, run_id: str, was_active: bool) -> None:
    """The run as it trains: progress, speed, time left and the learning curves, redrawn every poll."""
    job = board.get(run_id)
    if job is None:
        return
    if was_active and not job.active:
        st.rerun()  # the run just ended: redraw the whole page with its results
    events = job.events_since(0)
    batches = [e for e in events if e["event"] == "batch"]
    latest = events[-1] if events else {"event": "starting"}
    if job.state == "failed":
        st.error(job.error)
        return
    if not batches and not job.active:  # stopped before its first step: nothing was trained or saved
        ended = [e for e in events if e["event"] == "end"]
        st.info(ended[-1]["reason"] if ended else "This run ended before its first training step.")
        return
    if not batches:
        downloads = [e for e in events if e["event"] == "download"]
        if downloads and downloads[-1].get("bytes_total"):
            done, total = downloads[-1]["bytes_done"], downloads[-1]["bytes_total"]
            st.progress(done / total, text=f"Downloading CIFAR-10: {done / 1e6:.0f} of {total / 1e6:.0f} MB")
        else:
            st.progress(0.0, text=latest.get("message", "Loading the data and building the network…"))
        return
    last = batches[-1]
    epochs = job.config.epochs
    status = {"evaluating": "Testing on the test set…", "saved": "Done."}.get(latest["event"], "Training…")
    if job.stop_requested.is_set() and job.active:
        status = "Stopping…"
    st.progress(min(1.0, last["progress"]), text=f"{status} epoch {last['epoch']} of {epochs}")
    speed, remaining, loss = st.columns(3)
    speed.metric("Images per second", f"{last['images_per_second']:,.0f}")
    remaining.metric("Time left", duration(last["remaining"]) if job.active else "0 s")
    loss.metric("Training loss (smoothed)", f"{charts.smoothed([b['loss'] for b in batches])[-1]:.3f}")
    st.plotly_chart(live_curves(run_id, len(events), tuple(events), epochs), key="live_curves", width="stretch", theme=None)


def saved_runs_ui(current: Optional[str]) -> None:
    runs = list_runs(RUNS_DIR)
    if not runs:
        st.info("No saved runs yet: every finished or stopped run is kept here.")
        return
    labels = {run.run_id: run.label for run in runs}
    ids = list(labels)
    chosen = st.selectbox("Saved runs, newest first", ids, format_func=labels.get, key="saved_run",
                          index=ids.index(current) if current in ids else 0)
    run = next(run for run in runs if run.run_id == chosen)
    open_button, download = st.columns(2)
    if open_button.button("Open this run", key="open_run", disabled=chosen == current, width="stretch"):
        show_run(chosen)
        st.session_state.pop("inspected", None)
        st.rerun()
    download.download_button("Download its model (.keras)", data=run.model_path.read_bytes, key="download_model",
                             file_name=f"cifar-convnet-{chosen}.keras", mime="application/octet-stream", width="stretch")
    config = run.metrics.get("config", {})
    st.caption(", ".join(f"{key.replace('_', ' ')} {value}" for key, value in config.items()))


def run_model(run: Optional[SavedRun]) -> tuple[Any, Optional[list[str]]]:
    if run is None:
        return None, None
    try:
        model, metadata = saved_model(str(run.model_path), run.model_path.stat().st_mtime)
    except (ModelFileError, OSError) as error:
        st.error(f"This run's model could not be opened: {error}")
        return None, None
    return model, metadata["class_names"]


def main() -> None:
    st.set_page_config(page_title="Watch a ConvNet learn", page_icon="🧠", layout="wide")
    # Less empty space above the title, so the live curves fit a 1280x720 projector without scrolling.
    st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.5rem}</style>")
    board = job_board()
    config = run_setup_ui()
    train, stop = controls_ui(board)
    if stop and (active := board.active_job()) is not None:
        active.stop()
    if train:
        start_training(board, config)
    st.markdown("## Watch a ConvNet learn")
    with st.expander("What is this network?"):
        st.markdown("The classic Keras CIFAR-10 ConvNet: a 3×3 convolution layer with 32 filters looks at every "
                    "patch of the 32×32 picture, max pooling halves the picture, a 512-unit dense layer combines "
                    "everything, and a softmax gives a probability for each of the 10 classes. Dropout switches "
                    "units off at random while training so the network cannot memorise the training pictures. "
                    "Set it up on the left, press **Train**, and watch it learn.")
    run_id = current_run_id(board)
    job: Optional[TrainingJob] = board.get(run_id) if run_id else None
    run = open_run(RUNS_DIR, run_id) if run_id else None
    if run_id is None:
        st.info("Choose settings in the sidebar and press **Train**. The Quick demo preset trains a good model in one epoch, in about 20 seconds.")
    elif job is not None and (job.active or run is None):
        st.fragment(live_ui, run_every=POLL_SECONDS if job.active else None)(board, run_id, job.active)
    model, class_names = run_model(run)
    results, test_set, pictures, saved = st.tabs(["Results", "Test images", "Your pictures", "Saved runs"])
    with results, shown_as_error("showing the results"):
        if run is not None:
            results_ui(run)
        else:
            st.info("The test results appear here when a run finishes or is stopped.")
    with test_set, shown_as_error("showing the test images"):
        if run is not None and model is not None:
            gallery_ui(board, run, model)
        else:
            st.info("Train a model or open a saved run to test it on the test images.")
    with pictures, shown_as_error("classifying your pictures"):
        uploads_ui(model, class_names)
    with saved, shown_as_error("listing the saved runs"):
        saved_runs_ui(run_id)
    board.warm_up(after_seconds=WARM_UP_AFTER_SECONDS)


if __name__ == "__main__":
    main()
