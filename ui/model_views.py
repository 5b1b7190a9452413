"""The parts of the page that show what a trained model does: its results, the test-set
gallery, the user's own pictures, and inside the network. Each `*_ui()` draws one part;
the logic they call lives in the `cifar` package.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import streamlit as st
from PIL import Image

from cifar import charts
from cifar.images import ImageError, load_image, to_network_input
from cifar.data import CIFAR10_CLASSES
from cifar.inference import TEST_PROBABILITIES_FILE, PageModel
from cifar.store import SavedRun
from ui.watch_views import add_to_watch_list, upload_watch_button

GALLERY_SIZE = 24
NO_TOOLBAR = {"displayModeBar": False}  # Plotly's toolbar covered chart titles and bars on a projector and a phone
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]


def with_article(noun: str) -> str:
    """ "an airplane", "a cat": the article a class name takes."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "estimating…"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def curves_ui(figures: tuple[object, object], key: str) -> None:
    """Loss and accuracy side by side; on a phone Streamlit stacks the columns, one chart above the other."""
    for column, figure, metric in zip(st.columns(2), figures, ("loss", "accuracy")):
        column.plotly_chart(figure, key=f"{key}_{metric}", width="stretch", theme=None, config=NO_TOOLBAR)


def run_heading(run: SavedRun) -> None:
    """Which run this is, in words: the results and the tests below it are this run's."""
    st.markdown(f"#### {run.title} · {run.epochs_text}")
    st.caption(f"{run.settings_text}. Run {run.run_id}.")


def results_ui(run: SavedRun) -> None:
    metrics = run.metrics
    run_heading(run)
    status, reason = metrics.get("status"), metrics.get("reason", "")
    # A finished run needs no box (the heading says how many epochs): the curves then fit a projector's first screen.
    if status == "stopped":
        st.info(f"{reason} The model of the last completed step was tested and saved.")
    elif status == "diverged":
        st.warning(reason)
    # A row that wraps: four across on a projector, two by two on a phone instead of a screenful.
    with st.container(horizontal=True, gap="medium"):
        st.metric("Test accuracy", f"{metrics['test_accuracy']:.1%}", width=150)
        st.metric("Test loss", f"{metrics['test_loss']:.4f}", width=150)
        st.metric("Images per second", f"{metrics.get('images_per_second', 0):,.0f}", width=150)
        st.metric("Training time", duration(metrics.get("train_seconds")), width=150)
    batches, history = metrics.get("batches", []), metrics.get("history", [])
    epochs = metrics.get("config", {}).get("epochs", len(history))
    pauses = [event["progress"] * epochs for event in metrics.get("pauses", []) if event.get("event") == "paused"]
    curves_ui(charts.learning_curves(batches, history, epochs, x_max=max(run.epochs_trained, 1), pauses=pauses,
                                     validation=charts.validation_label(metrics.get("validation"))), f"curves_{run.run_id}")
    matrix, per_class = st.columns([3, 2])
    with matrix:
        st.subheader("Confusion matrix")
        st.caption("Rows are the true classes, columns what the network said. The diagonal is right.")
        st.plotly_chart(charts.confusion_matrix(metrics["confusion_matrix"], metrics["class_names"]),
                        key=f"confusion_{run.run_id}", width="stretch", theme=None, config=NO_TOOLBAR)
    with per_class:
        st.subheader("Accuracy per class")
        st.plotly_chart(charts.per_class_accuracy(metrics["per_class_accuracy"]), key=f"per_class_{run.run_id}",
                        width="stretch", theme=None, config=NO_TOOLBAR)


def pixels_large(pixels: np.ndarray, size: int = 192) -> Image.Image:
    """Scaled up without smoothing, so every one of the 32x32 pixels shows."""
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


def test_set_probabilities(run: SavedRun, model: PageModel, x_test: np.ndarray) -> np.ndarray:
    """Every test image's probabilities: as the worker saved them, else computed now."""
    saved = run.folder / TEST_PROBABILITIES_FILE
    if saved.is_file():
        return np.load(saved).astype(np.float32)
    return model.probabilities(x_test)


ALL_CLASSES = "All classes"
TILE_WIDTH = 104  # px: three tiles side by side on a 390 px phone, eight or more on a projector


def gallery_ui(test_split: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]], run: SavedRun, model: PageModel) -> None:
    from cifar.predict import pick_test_images

    x_test, y_test, class_names = test_split()  # a DataError here is shown by the tab's shown_as_error
    probabilities = test_set_probabilities(run, model, x_test)
    if len(probabilities) != len(y_test):
        st.error("This run was tested on a different dataset from the one loaded now.")
        return
    predicted = probabilities.argmax(axis=1)
    pick_class, mistakes, shuffle = st.columns([2, 2, 1], vertical_alignment="bottom")
    chosen_class = pick_class.selectbox("True class", [ALL_CLASSES, *class_names], key="gallery_class")
    mistakes_only = mistakes.checkbox("Only mistakes", key="gallery_mistakes")
    if shuffle.button("New pick", key="gallery_shuffle") or "gallery_seed" not in st.session_state:
        st.session_state.gallery_seed = int(time.time() * 1000) % 2**31
    class_index = None if chosen_class == ALL_CLASSES else class_names.index(chosen_class)
    matching, shown = pick_test_images(y_test, predicted, class_index, mistakes_only, GALLERY_SIZE,
                                       st.session_state.gallery_seed)
    if not matching:
        st.info("No test images match: no mistakes at all!" if mistakes_only else "No test images match.")
        return
    right_count = int((predicted[shown] == y_test[shown]).sum())
    st.caption(f"{matching:,} matching test images; showing {len(shown)}, {right_count} of them right. Green: the "
               "network is right; red: it is wrong. Press Inspect to see what it thinks of one.")
    with st.container(horizontal=True, gap="small"):
        for index in shown:
            with st.container(width=TILE_WIDTH, gap=None):
                st.image(pixels_large(x_test[index], TILE_WIDTH), width=TILE_WIDTH)
                if st.button("Inspect", key=f"inspect_{index}", width="stretch"):
                    st.session_state.inspected = int(index)
                st.button("Watch", key=f"watch_{index}", width="stretch", on_click=add_to_watch_list,
                          args=({"test_index": int(index)},), help="Follow this picture epoch by epoch in your next run.")
                st.caption(tile_words(class_names[predicted[index]], class_names[y_test[index]]))
    # Open until dismissed, not only in the run its button started: the page may be drawn again
    # meanwhile (a run starting or ending, a live page starting to stream).
    inspected = st.session_state.get("inspected")
    if isinstance(inspected, int) and 0 <= inspected < len(y_test):
        inspect_dialog(x_test[inspected], inspected, probabilities[inspected], class_names,
                       class_names[y_test[inspected]], model)


def tile_words(said: str, truth: str) -> str:
    """Two short lines under a test picture, in colour and in words, with no emoji (which show as
    empty boxes in a browser without an emoji font): what the network said, and whether it is right."""
    if said == truth:
        return f":green[**✓ {said}**]  \n:green[right]"
    return f":red[**✗ {said}**]  \n:red[true: {truth}]"


def forget_inspected() -> None:
    st.session_state.pop("inspected", None)


@st.dialog("What the network thinks of this test image", width="large", on_dismiss=forget_inspected)
def inspect_dialog(pixels: np.ndarray, index: int, probabilities: np.ndarray, class_names: list[str], truth: str,
                   model: PageModel) -> None:
    """Over the page, where the eye is, instead of below a grid that may be off screen."""
    picture, bars = st.columns([1, 2])
    picture.image(pixels_large(pixels, 256), caption=f"Test image {index}: {with_article(truth)}")
    bars.plotly_chart(charts.class_probabilities(probabilities, class_names, truth), key="inspected_probabilities",
                      width="stretch", theme=None, config=NO_TOOLBAR)
    inside_ui(model, pixels)


def inside_ui(model: PageModel, pixels: np.ndarray) -> None:
    """The conv layer's 32 filters, each above the map of where it fires in this picture."""
    from cifar.inside import filters_above_maps

    with st.expander("Inside the network: what each of its 32 filters finds in this picture"):
        st.image(filters_above_maps(model.conv_kernel(), model.conv_activations(pixels)), width="stretch",
                 caption="Each learned 3×3 filter (colours stretched), with the map of where it fires in this picture "
                         "below it: bright is strong (after ReLU). Each map is scaled to its own strongest point, and "
                         "brightness is the square root of the strength, so a weak filter's map shows too; one that "
                         "finds nothing stays black. The dense layer decides from these maps, pooled to 16×16.")


def uploads_ui(model: Optional[PageModel], class_names: Optional[list[str]]) -> None:
    files = st.file_uploader("Upload pictures (PNG, JPEG, WebP, GIF, BMP or TIFF)", type=UPLOAD_TYPES,
                             accept_multiple_files=True, key="upload")
    names = ", ".join(class_names or CIFAR10_CLASSES)
    st.caption(f"The network knows only these classes: {names}. Anything else still gets one of these names. It sees "
               "the centre square of your picture at 32×32 pixels, and it learned from small photos of one object "
               "in the middle, so a photo like that works best.")
    if model is None:
        st.info("Train a model or open a saved run to classify your pictures; you can already see what the network would see.")
    for file in files or []:
        st.markdown(f"**{file.name}**")
        try:
            image = load_image(file)
            network_input = to_network_input(image)
        except ImageError as error:
            st.error(str(error))
            continue
        original, seen, bars = st.columns([1, 1, 2])
        original.image(image, caption=f"Your picture ({image.width}×{image.height})", width="stretch")
        seen.image(pixels_large(network_input), caption="What the network sees: 32×32 pixels", width="stretch")
        if model is not None and class_names is not None:
            probabilities = model.probabilities(network_input)[0]
            bars.plotly_chart(charts.class_probabilities(probabilities, class_names), key=f"upload_{file.file_id}",
                              width="stretch", theme=None, config=NO_TOOLBAR)
            inside_ui(model, network_input)
        upload_watch_button(file.name, network_input, key=f"watch_upload_{file.file_id}")
