"""The Compare runs tab: two to four saved or training runs, their per-epoch curves overlaid (each
run in its colour, solid for training, dashed for validation) above a table of their figures,
filling in live while any of them trains; and the dropout experiment in one click. The words,
figures and charts come from cifar/compare.py; this file only draws them.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import streamlit as st

from cifar import compare
from cifar.config import TrainConfig, dropout_experiment
from cifar.live import Board, LiveRun
from cifar.runstore import SAVED, QueueFull, RunRecord, RunStore, Speeds, expected_seconds
from cifar.store import SavedRun, open_run
from ui.live_parts import LiveParts
from ui.model_views import NO_TOOLBAR, duration

COMPARE_TAB = "Compare runs"
EXPERIMENT_PROBLEM = "dropout_experiment_problem"  # what went wrong when the button was pressed, shown in the tab


@st.cache_resource(max_entries=64)
def saved_run(runs_dir: Path, run_id: str, ended: Optional[float]) -> Optional[SavedRun]:
    """A saved run's metrics, read once per run (its end time is part of the key), not on every redraw."""
    return open_run(runs_dir, run_id)


def comparable_runs(store: RunStore, board: Board, runs_dir: Path) -> dict[str, str]:
    """Every run a comparison can take, id to its label in words: training now, queued, then saved, newest first."""
    running, queued, _ = board.snapshot()
    labels = {run.run_id: f"{run.config.in_words()} · training now" for run in running}
    labels.update({run.run_id: f"{run.config.in_words()} · waiting in the queue" for run in queued})
    settings = {run.run_id: run.config.in_words() for run in running + queued}
    for record in store.runs(SAVED):
        if record.run_id not in labels and (run := saved_run(runs_dir, record.run_id, record.ended)) is not None:
            labels[record.run_id], settings[record.run_id] = run.label, run.settings_text
    # Two runs started in the same minute read alike: their settings, else their ids, tell them apart.
    for extra in (settings, {run_id: f"run {run_id}" for run_id in labels}):
        alike = Counter(labels.values())
        labels = {run_id: f"{label} · {extra[run_id]}" if alike[label] > 1 else label for run_id, label in labels.items()}
    return labels


def start_dropout_experiment(queue: Callable[[TrainConfig], str], cancel: Callable[[str], object]) -> None:
    """The button's callback, run before the page is drawn: it may still choose the runs compared and the tab shown."""
    st.session_state.pop(EXPERIMENT_PROBLEM, None)
    without, recipe = dropout_experiment()
    try:
        first = queue(without)
        try:
            second = queue(recipe)
        except QueueFull:
            cancel(first)  # half an experiment compares nothing
            raise
    except QueueFull as full:
        st.session_state[EXPERIMENT_PROBLEM] = f"{full} The dropout experiment needs two places in the queue."
        return
    except Exception as error:  # a callback's exception would reach the page as a traceback
        logging.getLogger(__name__).exception("failed while starting the dropout experiment")
        st.session_state[EXPERIMENT_PROBLEM] = f"The dropout experiment could not start: {type(error).__name__}: {error}"
        return
    st.session_state.compare_runs = [first, second]
    st.session_state.tab = COMPARE_TAB  # the app's tabs are keyed "tab": this opens the comparison


def experiment_ui(queue: Callable[[TrainConfig], str], cancel: Callable[[str], object], speeds: Speeds) -> None:
    """The dropout experiment's button, with what it trains and how long that should take here."""
    without, recipe = dropout_experiment()
    st.button("Run the dropout experiment", key="dropout_experiment", type="primary",
              on_click=start_dropout_experiment, args=(queue, cancel))
    images = f"{without.train_size:,} training images" if without.train_size else "all training images"
    speed = speeds.of(without)  # both runs train the recipe's network
    if speed:  # a promise from this server's own measured speed of that network, or none at all
        both = expected_seconds(without, speed) + expected_seconds(recipe, speed)
        time_words = f"Both together take about {duration(both)} here, after any runs before them."
    else:
        time_words = "How long they take is not known yet on this server: it has not measured its speed with this network."
    st.caption(f"Two runs on the same {images}, seed and {without.epochs} epochs: one with no dropout, one with "
               f"the recipe's {recipe.conv_dropout:g}/{recipe.dense_dropout:g}. {time_words}")
    if problem := st.session_state.get(EXPERIMENT_PROBLEM):
        st.error(problem)


def compared_runs(run_ids: tuple[str, ...], board: Board, runs_dir: Path,
                  events_of: Callable[[str], LiveRun]) -> tuple[str, list[compare.ComparedRun]]:
    """What differs between the chosen runs, in words, and each run with its name and its epochs so
    far, from the store's events."""
    records: list[Optional[RunRecord]] = [board.run(run_id) for run_id in run_ids]
    saved = [saved_run(runs_dir, run_id, record.ended) if record is not None and record.state in SAVED else None
             for run_id, record in zip(run_ids, records)]
    configs = [record.config if record is not None else None for record in records]
    fallbacks = [f"run {run_id}" for run_id in run_ids]
    _, names = compare.differing_settings(configs, fallbacks)
    runs = []
    for run_id, record, run, config, name in zip(run_ids, records, saved, configs, names):
        live = events_of(run_id)
        live.refresh()
        metrics = run.metrics if run is not None else None
        history = compare.epoch_history(live.history(), metrics)
        test_accuracy = (metrics or {}).get("test_accuracy", record.summary.get("test_accuracy") if record else None)
        runs.append(compare.ComparedRun(run_id, name, history, config.epochs if config else len(history),
                                        training=record is not None and record.active, test_accuracy=test_accuracy,
                                        validation=compare.validation_of(live.of_kind("start"), metrics, config)))
    return compare.difference_in_words(configs, fallbacks), runs


def comparison_ui(run_ids: tuple[str, ...], board: Board, runs_dir: Path, events_of: Callable[[str], LiveRun],
                  live: LiveParts) -> None:
    """The overlaid curves and the table; a live part while a compared run trains."""
    headline, runs = compared_runs(run_ids, board, runs_dir, events_of)
    st.markdown(f"**Comparing {headline}.**")
    for column, figure, metric in zip(st.columns(2), compare.comparison_figures(runs), ("loss", "accuracy")):
        column.plotly_chart(figure, key=live.key(f"compare_{metric}"), width="stretch", theme=None, config=NO_TOOLBAR)
    st.table([compare.row_in_words(compare.comparison_row(run)) for run in runs], hide_index=True)
    st.caption("Validation and test are accuracies. Gap: the final training accuracy minus the final validation "
               "accuracy, in percentage points; the wider it is, the more the network memorised its training pictures.")
    if any(run.training for run in runs):
        st.caption("The curves fill in as the runs train, one point per epoch. The runs train one after the other.")


def compare_ui(store: RunStore, board: Board, runs_dir: Path, live: LiveParts, seconds: float,
               events_of: Callable[[str], LiveRun], queue: Callable[[TrainConfig], str],
               cancel: Callable[[str], object], shown: bool = True) -> None:
    """The Compare runs tab. `queue` submits a run as this page's (raising QueueFull), `cancel` takes
    one back. A tab not `shown` draws its widgets, which keep their choices, but not its charts."""
    st.markdown("Each run has its own colour: **solid** lines are training, **dashed** lines validation, on pictures "
                "the network never learns from. The gap between a run's training and validation accuracy is "
                "overfitting, the network memorising its training pictures; dropout narrows it.")
    experiment_ui(queue, cancel, board.snapshot()[2])
    labels = comparable_runs(store, board, runs_dir)
    if "compare_runs" in st.session_state:
        # Streamlit keeps a multiselect's choice as its labels, and a run's label changes when it starts
        # and when it is saved: read with the last run's labels, the choice is set again as run ids.
        st.session_state.compare_runs = [run_id for run_id in st.session_state.compare_runs if run_id in labels]
    # Never None: Streamlit first reads a value the experiment's button chose with the previous run's
    # format_func, whose labels do not know the runs just queued.
    chosen = st.multiselect("Runs to compare (two to four)", list(labels), format_func=lambda run_id: labels.get(run_id, run_id),
                            key="compare_runs", max_selections=compare.MAX_RUNS,
                            placeholder="Choose two to four saved or training runs")
    if len(chosen) < 2:
        st.info("Choose two to four runs above, or press **Run the dropout experiment**: what to look for is the gap "
                "between training and validation accuracy, wide without dropout and narrower with it.")
        return
    run_ids = tuple(chosen)
    if not shown:
        return  # thirty pages on other tabs need not build and receive these figures every few seconds
    if any(labels[run_id].endswith(("training now", "waiting in the queue")) for run_id in run_ids):
        live.add(seconds, comparison_ui, run_ids, board, runs_dir, events_of, live)
    else:
        comparison_ui(run_ids, board, runs_dir, events_of, live)
