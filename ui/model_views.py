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
from cifar.inference import TEST_PROBABILITIES_FILE, PageModel
from cifar.store import SavedRun

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


def results_ui(run: SavedRun) -> None:
    metrics = run.metrics
    status, reason = metrics.get("status"), metrics.get("reason", "")
    if status == "stopped":
        st.info(f"{reason} The model of the last completed step was tested and saved.")
    elif status == "diverged":
        st.warning(reason)
    else:
        st.success(reason)
    loss, accuracy, speed, took = st.columns(4)
    loss.metric("Test loss", f"{metrics['test_loss']:.4f}")
    accuracy.metric("Test accuracy", f"{metrics['test_accuracy']:.1%}")
    speed.metric("Images per second", f"{metrics.get('images_per_second', 0):,.0f}")
    took.metric("Training time", duration(metrics.get("train_seconds")))
    batches, history = metrics.get("batches", []), metrics.get("history", [])
    epochs = metrics.get("config", {}).get("epochs", len(history))
    trained = max([len(history)] + [batch["progress"] * epochs for batch in batches[-1:]])
    st.plotly_chart(charts.learning_curves(batches, history, epochs, x_max=max(trained, 1)),
                    key=f"curves_{run.run_id}", width="stretch", theme=None, config=NO_TOOLBAR)
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


def gallery_ui(test_split: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]], run: SavedRun, model: PageModel) -> None:
    from cifar.predict import pick_test_images

    x_test, y_test, class_names = test_split()  # a DataError here is shown by the tab's shown_as_error
    probabilities = test_set_probabilities(run, model, x_test)
    if len(probabilities) != len(y_test):
        st.error("This run was tested on a different dataset from the one loaded now.")
        return
    predicted = probabilities.argmax(axis=1)
    show, pick_class, shuffle = st.columns([2, 2, 1], vertical_alignment="bottom")
    mode = show.radio("Show", ["Random", "One class", "Only mistakes"], horizontal=True, key="gallery_mode")
    chosen_class = pick_class.selectbox("Class", class_names, key="gallery_class", disabled=mode != "One class")
    if shuffle.button("New pick", key="gallery_shuffle") or "gallery_seed" not in st.session_state:
        st.session_state.gallery_seed = int(time.time() * 1000) % 2**31
    show_what = {"Random": "all", "One class": "class", "Only mistakes": "mistakes"}[mode]
    matching, shown = pick_test_images(y_test, predicted, show_what, class_names.index(chosen_class), GALLERY_SIZE,
                                       st.session_state.gallery_seed)
    if not matching:
        st.info("No test images match: no mistakes at all!" if mode == "Only mistakes" else "No test images match.")
        return
    st.caption(f"{matching:,} matching test images; showing {len(shown)}. Press Inspect to see what the "
               "network thinks of one.")
    columns = st.columns(8)
    for position, index in enumerate(shown):
        with columns[position % 8]:
            right = predicted[index] == y_test[index]
            st.image(pixels_large(x_test[index], 96), width="stretch")
            # The button sits right under the equal-sized picture, so a row's buttons line up.
            if st.button("Inspect", key=f"inspect_{index}", width="stretch"):
                st.session_state.inspected = int(index)
            st.caption(f"{'✅' if right else '❌'} **{class_names[predicted[index]]}**  \ntrue: {class_names[y_test[index]]}")
    inspected = st.session_state.get("inspected")
    if inspected is not None and inspected < len(x_test):
        st.divider()
        picture, bars = st.columns([1, 2])
        picture.image(pixels_large(x_test[inspected], 256), caption=f"Test image {inspected}: {with_article(class_names[y_test[inspected]])}")
        bars.plotly_chart(charts.class_probabilities(probabilities[inspected], class_names, class_names[y_test[inspected]]),
                          key="inspected_probabilities", width="stretch", theme=None, config=NO_TOOLBAR)
        inside_ui(model, x_test[inspected])


def inside_ui(model: PageModel, pixels: np.ndarray) -> None:
    """The conv layer's 32 filters and the 32 maps of where each one fires in this picture."""
    from cifar.inside import conv_filters, feature_maps

    with st.expander("Inside the network: what its 32 filters find in this picture"):
        filters, maps = st.columns([1, 2])
        filters.image(conv_filters(model.conv_kernel()), caption="The 32 learned 3×3 filters (colours stretched)", width="stretch")
        maps.image(feature_maps(model.conv_activations(pixels)), caption="Where each filter fires (after ReLU; bright = strong). "
                   "The dense layer decides from these maps, pooled to 16×16.", width="stretch")


def uploads_ui(model: Optional[PageModel], class_names: Optional[list[str]]) -> None:
    files = st.file_uploader("Upload pictures (PNG, JPEG, WebP, GIF, BMP or TIFF)", type=UPLOAD_TYPES,
                             accept_multiple_files=True, key="upload")
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
