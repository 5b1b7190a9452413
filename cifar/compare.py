"""Runs side by side: what differs between their settings, in words; their per-epoch curves on one
chart, each run in its own colour; and the figures of a comparison table (final and best
validation accuracy, the train-validation gap, test accuracy).

Plain functions of plain data (configs, epoch entries), so the app draws them and the tests
check them without a browser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from cifar.charts import CURVE_TITLES, FONT, GRID_COLOUR, validation_label
from cifar.config import TrainConfig
from cifar.runstore import FULL_TRAINING_SET

# The settings a comparison names, in the words a class reads, in the sidebar's order.
SETTING_WORDS = {"conv_dropout": "conv dropout", "dense_dropout": "dense dropout", "learning_rate": "learning rate",
                 "batch_size": "batch size", "epochs": "epochs", "train_size": "training images", "seed": "seed",
                 "optimizer": "optimizer", "schedule": "schedule", "flip": "mirroring", "conv_start": "conv start",
                 "conv_blocks": "conv blocks", "filters": "filters", "kernel_size": "kernel", "dense_units": "dense units"}
# One colour per run, told apart by the colour-blind too (Okabe and Ito's palette); at most four runs.
RUN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")
MAX_RUNS = len(RUN_COLOURS)


def setting_value(name: str, value: Any) -> str:
    """One setting's value as a class reads it: dropout 0.0 (not 0), Adam, all 50,000 training images."""
    if name in ("conv_dropout", "dense_dropout"):
        return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"
    if name == "learning_rate":
        return f"{value:g}"
    if name == "train_size":
        return f"all {FULL_TRAINING_SET:,}" if value is None else f"{value:,}"
    if name == "optimizer":
        return str(value).upper() if value == "sgd" else str(value).capitalize()
    if name == "flip":
        return "on" if value else "off"
    if name == "conv_start":
        return {"pca": "picture patterns"}.get(value, str(value))
    if name == "kernel_size":
        return f"{value}×{value}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def differing_settings(configs: Sequence[Optional[TrainConfig]],
                       fallbacks: Sequence[str]) -> tuple[list[str], list[str]]:
    """The settings that differ between these runs' configs, and a short name per run made of its
    values of them: (["dense_dropout"], ["dense dropout 0.0", "dense dropout 0.5"]).

    A run whose name would be the same as another's (nothing differs, or two runs alike among
    others) is told apart by its fallback, e.g. its id. A run with no recorded settings is named
    by its fallback alone and takes no part in what differs.
    """
    known = [config for config in configs if config is not None]
    differing = [name for name in SETTING_WORDS if len({getattr(config, name) for config in known}) > 1]
    names = []
    for config, fallback in zip(configs, fallbacks):
        if config is None:
            names.append(f"{fallback} (settings not recorded)")
            continue
        names.append(", ".join(f"{SETTING_WORDS[name]} {setting_value(name, getattr(config, name))}" for name in differing))
    repeated = {name for name in names if names.count(name) > 1}
    return differing, [fallback if not name else f"{name} · {fallback}" if name in repeated else name
                       for name, fallback in zip(names, fallbacks)]


def difference_in_words(configs: Sequence[Optional[TrainConfig]], fallbacks: Sequence[str]) -> str:
    """The comparison's headline: "dense dropout 0.0 vs 0.5" when one setting differs, else the runs' names."""
    differing, names = differing_settings(configs, fallbacks)
    if len(differing) == 1 and all(config is not None for config in configs) and len(set(names)) == len(names):
        name = differing[0]
        return f"{SETTING_WORDS[name]} " + " vs ".join(setting_value(name, getattr(config, name)) for config in configs)
    return " vs ".join(names) if differing else "the same settings"


@dataclass(frozen=True)
class ComparedRun:
    """One run as a comparison needs it: its name there, per-epoch history, and how it ended."""

    run_id: str
    name: str  # what differs, in words: "dense dropout 0.0"
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch entries: epoch, loss, accuracy, val_loss, val_accuracy
    planned_epochs: int = 0
    training: bool = False  # queued or training now: no test accuracy yet
    test_accuracy: Optional[float] = None
    validation: Optional[dict[str, Any]] = None  # {"source": "held_out" | "test", "size": N} when known


def epoch_history(events: Sequence[dict[str, Any]], metrics: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """A run's per-epoch entries: from the store's events, so a training run fills in live; else
    from its saved metrics (a command-line run the store adopted has no events)."""
    from_events = [event for event in events if event.get("event") == "epoch"]
    if from_events or not metrics:
        return from_events
    return list(metrics.get("history", []))


def validation_of(events: Sequence[dict[str, Any]], metrics: Optional[dict[str, Any]],
                  config: Optional[TrainConfig]) -> Optional[dict[str, Any]]:
    """What the validation values were computed on, as training recorded it (its "start" event, or
    the saved metrics), else as the config asked. None when the run validates on nothing."""
    recorded = next((event["validation"] for event in events
                     if event.get("event") == "start" and isinstance(event.get("validation"), dict)), None)
    if recorded is None and metrics and isinstance(metrics.get("validation"), dict):
        recorded = metrics["validation"]
    if recorded is None:
        source = getattr(config, "validation", None)
        recorded = {"source": source} if source is not None else None
    return None if recorded is None or recorded.get("source") == "none" else recorded


@dataclass(frozen=True)
class ComparisonRow:
    """The table's figures for one run; None where the run has no such value (yet)."""

    name: str
    final_validation: Optional[float]
    best_validation: Optional[float]
    gap: Optional[float]  # final training accuracy minus final validation accuracy: the overfitting
    test_accuracy: Optional[float]
    training: bool


def comparison_row(run: ComparedRun) -> ComparisonRow:
    validated = [entry["val_accuracy"] for entry in run.history if "val_accuracy" in entry]
    last = run.history[-1] if run.history else {}
    gap = last["accuracy"] - last["val_accuracy"] if "accuracy" in last and "val_accuracy" in last else None
    return ComparisonRow(run.name, validated[-1] if validated else None, max(validated) if validated else None, gap,
                         None if run.training else run.test_accuracy, run.training)


def row_in_words(row: ComparisonRow) -> dict[str, str]:
    """The table's row as shown: accuracies in percent, the gap in percentage points, "still training"
    for a test not yet run."""
    def percent(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.1%}"

    # Short headings: five columns fit a phone's width.
    return {"Run": row.name, "Final validation": percent(row.final_validation),
            "Best validation": percent(row.best_validation),
            "Gap": "" if row.gap is None else f"{row.gap * 100:+.1f} pts",
            "Test": "still training" if row.training else percent(row.test_accuracy)}


def comparison_figures(runs: Sequence[ComparedRun]) -> tuple[go.Figure, go.Figure]:
    """Loss and accuracy per epoch for every run, as two figures (side by side on a projector,
    stacked on a phone): each run in its own colour, solid for training, dashed for validation."""
    return comparison_figure("loss", runs), comparison_figure("accuracy", runs)


def comparison_figure(key: str, runs: Sequence[ComparedRun]) -> go.Figure:
    """One metric per epoch for every run. The legend names each run once, by its solid line; its
    title says what the dashed lines were computed on, or, when the runs differ in that, each
    dashed line is named too."""
    figure = go.Figure()
    sources = {validation_label(run.validation, count=True) for run in runs if run.validation is not None}
    shared = next(iter(sources)) if len(sources) == 1 else None
    for run, colour in zip(runs, RUN_COLOURS):
        epochs = [entry["epoch"] for entry in run.history if key in entry]
        figure.add_trace(go.Scatter(
            x=epochs, y=[entry[key] for entry in run.history if key in entry], mode="lines+markers",
            name=run.name, legendgroup=run.run_id, line=dict(color=colour, width=2.5, dash="solid"),
            marker=dict(size=7, color=colour), hovertemplate=f"epoch %{{x}}<br>%{{y:.3f}}<extra>{run.name}: training</extra>"))
        validated = [entry for entry in run.history if f"val_{key}" in entry]
        if validated or (not run.history and run.validation is not None):
            words = validation_label(run.validation, count=True)
            figure.add_trace(go.Scatter(
                x=[entry["epoch"] for entry in validated], y=[entry[f"val_{key}"] for entry in validated],
                mode="lines+markers", name=f"{run.name}: {words}", legendgroup=run.run_id, showlegend=shared is None,
                line=dict(color=colour, width=2.5, dash="dash"), marker=dict(size=8, color=colour, symbol="diamond"),
                hovertemplate=f"epoch %{{x}}<br>%{{y:.3f}}<extra>{run.name}: {words}</extra>"))
    planned = max([run.planned_epochs for run in runs] + [len(run.history) for run in runs] + [1])
    grid = dict(showgrid=True, gridcolor=GRID_COLOUR, zeroline=False, linecolor=GRID_COLOUR, automargin=True)
    figure.update_xaxes(title_text="epoch", range=[0.5, planned + 0.5], title_standoff=6, **grid)
    figure.update_yaxes(**grid)
    if key == "accuracy":
        figure.update_yaxes(range=[0, 1], tickformat=".0%")
    else:
        figure.update_yaxes(rangemode="tozero")
    # Two lines, so that a phone's narrow chart shows "validation (5,000 held-out images)" whole.
    line_styles = f"solid: training<br>dashed: {shared or 'validation'}" if sources else "solid: training (no validation)"
    entries = sum(1 for trace in figure.data if trace.showlegend is not False)
    # Taller with each legend entry, which a phone shows one to a line, so the plot keeps its size.
    figure.update_layout(height=340 + 22 * entries, margin=dict(l=10, r=10, t=40, b=10), font=FONT,
                         uirevision=f"compare-{key}",
                         title=dict(text=CURVE_TITLES[key], x=0, xanchor="left", y=0.98),
                         template="none", plot_bgcolor="white", paper_bgcolor="white",
                         # Below the axis title, as many entries to a line as fit.
                         legend=dict(orientation="h", yanchor="top", y=-0.3, x=0, font=dict(size=13),
                                     title=dict(text=line_styles, side="top")),
                         hovermode="x unified")
    return figure
