"""What the network learns, epoch by epoch: its conv filters and what it says of the pictures on
its watch-list, live while a run trains and replayed with an epoch slider afterwards. The
snapshots are taken by the training worker (cifar/snapshots.py); these parts only draw them.
"""
from __future__ import annotations

from html import escape
from typing import Any, Optional, Sequence

import numpy as np
import streamlit as st

from cifar.inside import conv_filters
from cifar.snapshots import (WATCH_LIMIT, default_watch_list, item_pixels, predictions_story, upload_item,
                             watch_answer)

WATCH_TILE = 80  # px: eight tiles in a row on a projector, four on a phone
WATCH_WORDS = ("**The watch-list**: the same pictures, asked again after every epoch. Under each, what the network "
               "calls it and how sure it is, green when right and red when wrong: watch the answers change as it learns.")
FILTER_WORDS = ("**The {count} conv filters that look at the pixels**, each {size}×{size}, colours stretched. They "
                "start as random noise; as the network learns they become edges, stripes and colour blobs: the "
                "patterns it looks for everywhere in a picture.")
COLOURS = {"green": "#2ca02c", "red": "#d62728", "blue": "#1f77b4"}  # as the probability bars elsewhere
Item = dict[str, Any]


def option_id(item: Item) -> str:
    return f"upload:{item['name']}" if "pixels" in item else f"test:{item['test_index']}"


def watch_list_ui(y_test: Optional[np.ndarray], class_names: Optional[list[str]], source: Any = None) -> Optional[list[Item]]:
    """The sidebar's watch-list for the next run: 8 test images of different classes to start
    with, plus what the user added with "Watch" in the gallery or under an upload. Returns the
    items, or None (the worker's default) when the test images are not loaded. `source` names the
    test images: when it changes, the list starts again from its defaults (uploads stay)."""
    if y_test is None or class_names is None:
        return None
    defaults = [option_id(item) for item in default_watch_list(y_test)]
    added = st.session_state.setdefault("watch_added", {})
    if st.session_state.get("watch_source", source) != source:
        for option in [option for option in added if option.startswith("test:")]:
            del added[option]  # a test index of other test images would name another picture
        st.session_state.pop("watch_list", None)
    st.session_state.watch_source = source
    options = list(dict.fromkeys([*defaults, *added]))
    if "watch_list" not in st.session_state:
        st.session_state.watch_list = defaults

    def label(option: str) -> str:
        kind, _, name = option.partition(":")
        return f"your picture {name}" if kind == "upload" else f"test image {name}: {class_names[int(y_test[int(name)])]}"

    with st.sidebar.expander("Watch-list"):
        st.multiselect("Pictures the live view follows", options, key="watch_list", format_func=label,
                       max_selections=WATCH_LIMIT,
                       help="After every epoch the network is asked about these pictures again. Add any test image "
                            "with Watch in the test images, or one of your pictures under it, before you train.")
    chosen = st.session_state.watch_list
    return [added.get(option) or {"test_index": int(option.partition(":")[2])} for option in chosen]


def add_to_watch_list(item: Item) -> None:
    """A button's callback: the item joins the watch-list of the next run."""
    option = option_id(item)
    st.session_state.setdefault("watch_added", {})[option] = item
    chosen = list(st.session_state.get("watch_list", []))
    if option in chosen:
        st.toast("It is on the watch-list of your next run already.")
    elif len(chosen) >= WATCH_LIMIT:
        st.toast(f"The watch-list holds {WATCH_LIMIT} pictures: take one off in the sidebar first.")
    else:
        st.session_state.watch_list = [*chosen, option]
        st.toast("Added to the watch-list of your next run.")


def upload_watch_button(name: str, pixels: np.ndarray, key: str) -> None:
    st.button("Watch it in the next run", key=key, on_click=add_to_watch_list, args=(upload_item(name, pixels),),
              help="The live view then shows what the network says of this picture after every epoch.")


def snapshot_ui(snapshot: dict[str, Any], items: Sequence[Item], class_names: list[str], x_test: np.ndarray) -> None:
    """One snapshot: the watch-list's predictions in a row (that wraps on a phone), then the filters."""
    st.markdown(WATCH_WORDS)
    with st.container(horizontal=True, gap="small"):
        for item, row in zip(items, snapshot["watch"]):
            with st.container(width=WATCH_TILE, gap=None):
                tile_ui(item, np.asarray(row), class_names, x_test)
    words, filters = st.columns(2)
    kernel = np.asarray(snapshot["filters"])  # (size, size, channels, count): the first conv layer's
    words.markdown(FILTER_WORDS.format(size=kernel.shape[0], count=kernel.shape[-1]))
    filters.image(conv_filters(kernel, scale=8), width=320)


def tile_ui(item: Item, probabilities: np.ndarray, class_names: list[str], x_test: np.ndarray) -> None:
    """A watched picture, what the network calls it, and a bar of how sure it is, in one colour:
    green when right, red when wrong, blue for a user's picture (whose class nobody knows)."""
    from ui.model_views import pixels_large  # ui.model_views draws this module's Watch buttons

    said, sure, truth = watch_answer(probabilities, class_names, item)
    colour = COLOURS["blue" if truth is None else "green" if said == truth else "red"]
    below = escape(f"is: {truth}" if truth else f"yours: {item['name'][:14]}")
    said = escape(said)
    st.image(pixels_large(item_pixels(item, x_test), WATCH_TILE), width=WATCH_TILE)
    # One element for the words and the bar: a class watching gets fewer, smaller messages.
    # A long class name (aquarium_fish) breaks inside its tile rather than running into the next one.
    st.markdown(f'<div style="font-size:0.85rem;line-height:1.3;overflow-wrap:anywhere">'
                f'<span style="color:{colour};font-weight:700">{said}'
                f'</span> {sure:.0%}<div style="background:#e6e6e6;height:6px;border-radius:3px;margin:2px 0 3px">'
                f'<div style="width:{sure:.0%};height:6px;border-radius:3px;background:{colour}"></div></div>'
                f'<span style="color:#666">{below}</span></div>', unsafe_allow_html=True)


def epoch_words(epoch: int, epochs: int) -> str:
    return "Before training (step 0)" if epoch == 0 else f"After epoch {epoch} of {epochs}"


def live_snapshot_ui(snapshots: list[dict[str, Any]], items: Sequence[Item], class_names: list[str],
                     x_test: np.ndarray, epochs: int) -> None:
    """The newest snapshot of a run that trains."""
    if not snapshots or not items:
        st.caption("The watch-list and the filters appear here when training starts, and change after every epoch.")
        return
    latest = snapshots[-1]
    st.markdown(f"##### What it has learned so far · {epoch_words(latest['epoch'], epochs).lower()}")
    snapshot_ui(latest, items, class_names, x_test)


def replay_ui(snapshots: list[dict[str, Any]], items: Sequence[Item], class_names: list[str], x_test: np.ndarray,
              epochs: int, key: str = "epoch_scrub") -> None:
    """A finished run's snapshots, one epoch at a time, and each picture's story over them all."""
    if not snapshots or not items:
        return
    st.markdown("#### What it learned, epoch by epoch")
    recorded = [snapshot["epoch"] for snapshot in snapshots]
    if len(recorded) > 1:
        epoch = st.select_slider("Epoch", recorded, value=recorded[-1], key=key,
                                 format_func=lambda e: "step 0" if e == 0 else f"epoch {e}",
                                 help="Slide back to see the filters and the answers as they were after that epoch.")
    else:
        epoch = recorded[0]
    snapshot = snapshots[recorded.index(epoch)]
    st.caption(f"{epoch_words(epoch, epochs)}.")
    snapshot_ui(snapshot, items, class_names, x_test)
    st.markdown("**What it called each picture over the whole run**")
    st.markdown("\n".join(f"- {escape(picture_name(item, class_names))}: "
                          f"{predictions_story([s['watch'][position] for s in snapshots], class_names, recorded)}"
                          for position, item in enumerate(items)))


def picture_name(item: Item, class_names: list[str]) -> str:
    if "label" in item:
        return f"test image {item['test_index']} ({class_names[item['label']]})"
    return f"your picture {item.get('name', '')}"
