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
from cifar.images import INPUT_SIZE, ImageError, load_image, to_network_input
from cifar.inference import PageModel, test_set_probabilities
from cifar.live import duration, pause_positions
from cifar.results import TOP_CLASSES, first_cell, many_classes, per_class_table, top_confusions
from cifar.store import SavedRun
from ui.watch_views import add_to_watch_list, option_id, upload_watch_button

GALLERY_SIZE = 24
NO_TOOLBAR = {"displayModeBar": False}  # Plotly's toolbar covered chart titles and bars on a projector and a phone
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]
# Pictures are decoded to at most 25 megapixels; 25 MB covers such a photo as JPEG or WebP. A bigger
# file (a 25 MP PNG or TIFF can be 75 MB) gets Streamlit's own message naming the limit.
PICTURE_UPLOAD_MB = 25


def with_article(noun: str) -> str:
    """ "an airplane", "a cat": the article a class name takes."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


# Beside the live curves and a saved run's.
CURVE_WORDS = ("**The curves.** Loss (left) should fall and accuracy (right) rise as the network sees more pictures. "
               "Blue is measured on the training pictures, orange (validation) on pictures it never trains on: when "
               "blue keeps improving and orange stalls, the gap between them is the network memorising its "
               "training pictures.")


def curves_ui(figures: tuple[object, object], key: str) -> None:
    """Loss and accuracy side by side; on a phone Streamlit stacks the columns, one chart above the other."""
    for column, figure, metric in zip(st.columns(2), figures, ("loss", "accuracy")):
        column.plotly_chart(figure, key=f"{key}_{metric}", width="stretch", theme=None, config=NO_TOOLBAR)


def run_heading(run: SavedRun) -> None:
    """Which run this is, in words: the results and the tests below it are this run's."""
    st.markdown(f"#### {run.title} · {run.epochs_text}")
    st.caption(f"{run.settings_text}. Run {run.run_id}.")


TestSplit = Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]


def results_ui(run: SavedRun, test_split: TestSplit, model: Optional[PageModel]) -> None:
    metrics = run.metrics
    run_heading(run)
    status, reason = metrics.get("status"), metrics.get("reason", "")
    # A finished run needs no box (the heading says how many epochs): the curves then fit a projector's first screen.
    if status == "stopped":
        st.info(f"{reason} The model of the last completed step was tested and saved.")
    elif status == "diverged":
        st.warning(reason)
    # A row that wraps: four across on a projector, two by two on a phone instead of a screenful.
    batches, history = metrics.get("batches", []), metrics.get("history", [])
    trained_here = bool(batches or history)  # an uploaded model from elsewhere has no speed or curves
    with st.container(horizontal=True, gap="medium"):
        st.metric("Test accuracy", f"{metrics['test_accuracy']:.1%}", width=150)
        st.metric("Test loss", f"{metrics['test_loss']:.4f}", width=150)
        if trained_here:
            st.metric("Images per second", f"{metrics.get('images_per_second', 0):,.0f}", width=150)
            st.metric("Training time", duration(metrics.get("train_seconds")), width=150)
    epochs = metrics.get("config", {}).get("epochs", len(history))
    pauses = pause_positions(metrics.get("pauses", []), epochs)
    if trained_here:
        st.caption(CURVE_WORDS)
        curves_ui(charts.learning_curves(batches, history, epochs, x_max=max(run.epochs_trained, 1), pauses=pauses,
                                         validation=charts.validation_label(metrics.get("validation"))),
                  f"curves_{run.run_id}")
    else:
        st.caption("This model was trained elsewhere and uploaded, so it has no learning curves here: only its test.")
    class_names = metrics["class_names"]
    start_at_the_worst_mistake(metrics["confusion_matrix"], class_names)
    if many_classes(class_names):
        many_classes_ui(metrics["confusion_matrix"], class_names)
    else:
        few_classes_ui(run, metrics, class_names)
    cell_ui(metrics["confusion_matrix"], class_names, test_split, run, model)


def few_classes_ui(run: SavedRun, metrics: dict, class_names: list[str]) -> None:
    """Every cell of the matrix, clickable, beside a bar per class."""
    matrix, per_class = st.columns([3, 2])
    with matrix:
        st.subheader("Confusion matrix")
        st.caption("Each row is a true class, each column what the network said: the diagonal is where it was right, "
                   "and a dark cell off the diagonal is a mistake it makes often. Click a cell (or pick it below) to "
                   "see those pictures: the mistakes a network makes often look like the class it chose.")
        chart_key = f"confusion_{run.run_id}"
        follow_the_click(chart_key, class_names)
        st.plotly_chart(charts.confusion_matrix(metrics["confusion_matrix"], class_names), key=chart_key,
                        width="stretch", theme=None, config=NO_TOOLBAR, on_select="rerun", selection_mode="points")
    with per_class:
        st.subheader("Accuracy per class")
        st.plotly_chart(charts.per_class_accuracy(metrics["per_class_accuracy"]), key=f"per_class_{run.run_id}",
                        width="stretch", theme=None, config=NO_TOOLBAR)


def many_classes_ui(confusion: list[list[int]], class_names: list[str]) -> None:
    """Too many classes for a cell or a bar each: the most common mistakes as a list, each opening its
    pictures, beside a table of the classes worst first; the whole matrix only on request."""
    mistakes, per_class = st.columns(2)
    with mistakes:
        st.subheader("Most common mistakes")
        st.caption(f"Of all {len(class_names)} × {len(class_names)} pairs of true and predicted class, the ones with "
                   "the most test images the network got wrong. Press one (or pick any pair below) to see those "
                   "pictures: the mistakes a network makes often look like the class it chose.")
        top = top_confusions(confusion, class_names)
        # A list to read down, not a column of centred buttons: left-aligned, and compact.
        st.html("<style>.st-key-top_confusions button{justify-content:flex-start;min-height:2.25rem;padding:0.2rem 0.75rem}"
                ".st-key-top_confusions button>div{justify-content:flex-start;width:100%}"
                ".st-key-top_confusions button p{text-align:left}</style>")
        if not top:
            st.info("No mistakes at all on the test set.")
        chosen = tuple(st.session_state.get(key) for key in CELL_KEYS)
        with st.container(gap="small", key="top_confusions"):
            for rank, confusion_cell in enumerate(top, start=1):
                selected = chosen == (confusion_cell.true_class, confusion_cell.predicted_class)
                st.button(f"{rank}. {confusion_cell.in_words()}", key=f"confusion_{rank}", width="stretch",
                          type="primary" if selected else "secondary", on_click=open_cell,
                          args=(confusion_cell.true_class, confusion_cell.predicted_class))
    with per_class:
        st.subheader("Accuracy per class, worst first")
        rows = per_class_table(confusion, class_names)
        st.dataframe({"class": [row.name for row in rows], "accuracy": [row.accuracy for row in rows],
                      "test images": [row.images for row in rows],
                      "most often called": [row.mistaken_for or "" for row in rows]},
                     key="per_class_table", hide_index=True, height=470, width="stretch",
                     column_config={"accuracy": st.column_config.ProgressColumn("accuracy", format="percent", width=90,
                                                                                min_value=0.0, max_value=1.0),
                                    "test images": st.column_config.NumberColumn("images", width=60,
                                                                                 help="Test images of this class")})
    with st.expander(f"The whole confusion matrix ({len(class_names)} × {len(class_names)})"):
        st.caption("Each row is a true class and each column a predicted one, in the classes' order; the redder a "
                   "cell, the larger the share of its true class the network gave that wrong name. The right answers "
                   "(the diagonal) are left blank. Hover over a cell to read it.")
        st.plotly_chart(charts.confusion_heatmap(confusion, class_names), key="confusion_heatmap", width="stretch",
                        theme=None, config=NO_TOOLBAR)


def open_cell(truth: str, said: str) -> None:
    """A listed mistake's callback: the two class boxes, drawn after it, show that cell."""
    st.session_state.cell_true, st.session_state.cell_predicted = truth, said


CELL_KEYS = ("cell_true", "cell_predicted")


def follow_the_click(chart_key: str, class_names: list[str]) -> None:
    """A click on a cell sets the two class boxes, before they are drawn, so the boxes and the chart agree.
    Only a new click does: the boxes, changed since, are not put back to a cell clicked before."""
    selection = st.session_state.get(chart_key)
    points = selection["selection"]["points"] if selection else []
    clicked = tuple(int(value) for value in points[0]["customdata"][:2]) if points else None
    if clicked is not None and clicked != st.session_state.get("cell_clicked"):
        for key, index in zip(CELL_KEYS, clicked):
            st.session_state[key] = class_names[index]
    st.session_state.cell_clicked = clicked


def start_at_the_worst_mistake(confusion: list[list[int]], class_names: list[str]) -> None:
    """A first look (or a run of other classes) opens the most common mistake in the two class boxes."""
    if not all(key in st.session_state and st.session_state[key] in class_names for key in CELL_KEYS):
        for key, index in zip(CELL_KEYS, first_cell(confusion, class_names)):
            st.session_state[key] = class_names[index]


def cell_ui(confusion: list[list[int]], class_names: list[str], test_split: TestSplit, run: SavedRun,
            model: Optional[PageModel]) -> None:
    """The test images of one cell of the matrix, chosen by a click on it or by the two boxes."""
    from cifar.predict import surest_in_cell

    start_at_the_worst_mistake(confusion, class_names)
    with st.container(horizontal=True, gap="small"):
        truth = st.selectbox("True class", class_names, key="cell_true", width=220)
        said = st.selectbox("Predicted class", class_names, key="cell_predicted", width=220)
    if model is None:
        st.info("This run's model is not ready on this page, so its test images cannot be shown yet.")
        return
    x_test, y_test, test_class_names = test_split()  # a DataError here is shown by the tab's shown_as_error
    probabilities = test_set_probabilities(run.folder, model, x_test)
    if len(probabilities) != len(y_test) or list(test_class_names) != list(class_names):
        st.error("This run was tested on a different dataset from the one loaded now.")
        return
    true_index, predicted_index = class_names.index(truth), class_names.index(said)
    indices = surest_in_cell(y_test, probabilities, true_index, predicted_index)
    shown = indices[:GALLERY_SIZE]
    surest = f"; showing the {len(shown)} it was surest of" if len(indices) > len(shown) else ""
    st.markdown(f"**True {truth}, predicted {said}: {len(indices):,} test images{surest}**")
    if not len(indices):
        st.caption("None: the network never said this for this class.")
        return
    # Keyed by the cell, so a browser test finds this cell's pictures and never another's.
    with st.container(horizontal=True, gap="small", key=f"cell_tiles_{true_index}_{predicted_index}"):
        for index in shown:
            with st.container(width=TILE_WIDTH, gap=None):
                st.image(pixels_large(x_test[index], TILE_WIDTH), width=TILE_WIDTH)
                # The gallery, drawn on every run, opens the dialog: a page may show one dialog at a time.
                if st.button("Inspect", key=f"cell_inspect_{index}", width="stretch"):
                    st.session_state.inspected = int(index)
                st.caption(cell_tile_words(probabilities[index], predicted_index, true_index, class_names))


def cell_tile_words(probabilities: np.ndarray, predicted_index: int, true_index: int, class_names: list[str]) -> str:
    """ "dog 61% · true cat 20%": how sure the network was, and how much it gave the truth."""
    said = f"{class_names[predicted_index]} {probabilities[predicted_index]:.0%}"
    if predicted_index == true_index:
        return f":green[{said}]"
    return f":red[{said}] · true {class_names[true_index]} {probabilities[true_index]:.0%}"


def pixels_large(pixels: np.ndarray, size: int = 192) -> Image.Image:
    """Scaled up without smoothing, so every one of the pixels shows."""
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


ALL_CLASSES = "All classes"
TILE_WIDTH = 104  # px: three tiles side by side on a 390 px phone, eight or more on a projector


def gallery_ui(test_split: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]], run: SavedRun, model: PageModel) -> None:
    from cifar.predict import pick_test_images

    x_test, y_test, class_names = test_split()  # a DataError here is shown by the tab's shown_as_error
    probabilities = test_set_probabilities(run.folder, model, x_test)
    # CIFAR-10 and CIFAR-100 both have 10,000 test images: the classes tell them apart.
    if len(probabilities) != len(y_test) or list(run.metrics.get("class_names", class_names)) != list(class_names):
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
                item = {"test_index": int(index)}
                watched = option_id(item) in st.session_state.get("watch_list", [])
                st.button("Watching" if watched else "Watch", key=f"watch_{index}", width="stretch", disabled=watched,
                          on_click=add_to_watch_list, args=(item,),
                          help="On the watch-list of your next run." if watched else
                               "Follow this picture epoch by epoch in your next run.")
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
    picture, looked, bars = st.columns([1, 1, 2])
    picture.image(pixels_large(pixels, 256), caption=f"Test image {index}: {with_article(truth)}", width="stretch")
    bars.plotly_chart(charts.class_probabilities(probabilities, class_names, truth), key="inspected_probabilities",
                      width="stretch", theme=None, config=NO_TOOLBAR)
    with looked:
        st.caption(looked_words(where_it_looked_ui(model, pixels, class_names, int(np.argmax(probabilities)),
                                                   "inspected_occlusion", true_index=class_names.index(truth))))
    inside_ui(model, pixels)


def where_it_looked_ui(model: PageModel, pixels: np.ndarray, class_names: list[str], predicted_index: int, key: str,
                       true_index: Optional[int] = None) -> str:
    """The occlusion map of one class over the picture: for the network's answer, or (a choice) for the
    true class of a test image or any class of an uploaded picture. Returns the class it is for."""
    from cifar.occlusion import occlusion_map, occlusion_overlay

    if true_index is None:
        chosen = st.selectbox("Where it looked for", class_names, index=predicted_index, key=key)
        class_index = class_names.index(chosen)
    elif true_index != predicted_index:
        answer, truth = f"{class_names[predicted_index]} (its answer)", f"{class_names[true_index]} (the truth)"
        chosen = st.radio("Where it looked for", [answer, truth], key=key, horizontal=True)
        class_index = true_index if chosen == truth else predicted_index
    else:
        class_index = predicted_index
    name = class_names[class_index]
    drops = occlusion_map(model.probabilities, pixels, class_index)
    st.image(occlusion_overlay(pixels, drops), width="stretch", caption=f"Where it looked for {name}: covering the "
             f"reddest part lowers {name} by {max(float(drops.max()), 0) * 100:.0f} points")
    return name


def looked_words(name: str) -> str:
    return (f"Red: covering this part with a grey square lowers the network's belief in '{name}' most: that is where "
            "it looked. If the red sits on the background, the network may be using the background rather than the "
            "object.")


def inside_ui(model: PageModel, pixels: np.ndarray) -> None:
    """The first conv layer's filters, each above the map of where it fires in this picture."""
    from cifar.inside import filters_above_maps

    kernel, activations = model.conv_kernel(), model.conv_activations(pixels)
    size, count = kernel.shape[0], kernel.shape[-1]
    with st.expander(f"Inside the network: what each of its {count} first filters finds in this picture"):
        st.image(filters_above_maps(kernel, activations), width="stretch",
                 caption=f"Each learned {size}×{size} filter (colours stretched), with the map of where it fires in this "
                         "picture below it: bright is strong (after ReLU). Each map is scaled to its own strongest point, "
                         "and brightness is the square root of the strength, so a weak filter's map shows too; one that "
                         "finds nothing stays black. The next layers decide from these maps, pooled to "
                         f"{activations.shape[0] // 2}×{activations.shape[1] // 2}.")


def uploads_ui(model: Optional[PageModel], class_names: Optional[list[str]]) -> None:
    files = st.file_uploader("Upload pictures (PNG, JPEG, WebP, GIF, BMP or TIFF)", type=UPLOAD_TYPES,
                             accept_multiple_files=True, key="upload", max_upload_size=PICTURE_UPLOAD_MB)
    how_it_sees = (f"It sees the centre square of your picture at {INPUT_SIZE}×{INPUT_SIZE} pixels, and it learned from small photos of "
                   "one object in the middle, so a photo like that works best.")
    if class_names is None:
        st.caption(f"The network knows only the classes it trained on: anything else still gets one of their names. "
                   f"{how_it_sees}")
    elif many_classes(class_names):
        st.caption(f"The network knows only the {len(class_names)} classes it trained on (listed below): anything else "
                   f"still gets one of their names, and it shows its {TOP_CLASSES} likeliest. {how_it_sees}")
        with st.expander(f"The {len(class_names)} classes it knows"):
            st.caption(", ".join(class_names))
    else:
        st.caption(f"The network knows only these classes: {', '.join(class_names)}. Anything else still gets one of "
                   f"these names. {how_it_sees}")
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
        original, seen, looked, bars = st.columns([1, 1, 1, 2])
        original.image(image, caption=f"Your picture ({image.width}×{image.height})", width="stretch")
        seen.image(pixels_large(network_input), width="stretch",
                   caption=f"What the network sees: {network_input.shape[0]}×{network_input.shape[1]} pixels")
        if model is not None and class_names is not None:
            probabilities = model.probabilities(network_input)[0]
            bars.plotly_chart(charts.class_probabilities(probabilities, class_names), key=f"upload_{file.file_id}",
                              width="stretch", theme=None, config=NO_TOOLBAR)
            with looked:
                looked_for = where_it_looked_ui(model, network_input, class_names, int(np.argmax(probabilities)),
                                                f"upload_occlusion_{file.file_id}")
            st.caption(looked_words(looked_for))  # below the row: too long for a fifth of it
            inside_ui(model, network_input)
        upload_watch_button(file.name, network_input, key=f"watch_upload_{file.file_id}")
