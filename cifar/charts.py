"""Plotly figures of a run: live learning curves, a clickable confusion matrix, per-class accuracy, class
probabilities. Plain functions of plain data, so the app draws them and tests check them
without a browser.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from cifar.results import TOP_CLASSES, many_classes, top_classes

TRAIN_COLOUR, VALIDATION_COLOUR = "#1f77b4", "#ff7f0e"
FONT = dict(size=15)  # readable from the back of a classroom
TEMPLATE = "plotly_white"
MAX_POINTS = 600
GRID_COLOUR = "#e5e5e5"


def smoothed(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled to 0."""
    result, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        result.append(average / (1 - weight**count))
    return result


def thinned(count: int, limit: int = MAX_POINTS) -> list[int]:
    """Evenly spaced indices, at most about `limit`, always ending with the newest point."""
    stride = max(1, -(-count // limit))
    indices = list(range(0, count, stride))
    if count and indices[-1] != count - 1:
        indices.append(count - 1)
    return indices


CURVE_TITLES = {"loss": "Loss (lower is better)", "accuracy": "Accuracy (higher is better)"}


def validation_label(checked_on: dict[str, Any] | None, count: bool = False) -> str:
    """What a run's validation curve was computed on: "held-out validation", short enough for half
    a legend's row, or with `count` "held-out validation (5,000 images)". Runs from before the
    held-out split (no record of it) validated on the test set."""
    checked_on = checked_on or {}
    if checked_on.get("source") != "held_out":
        return "test-set validation"
    images = checked_on.get("images")
    return f"held-out validation ({images:,} images)" if count and isinstance(images, int) else "held-out validation"


def learning_curves(batches: list[dict[str, Any]], history: list[dict[str, Any]], epochs: int,
                    x_max: float | None = None, max_points: int = MAX_POINTS, lean: bool = False,
                    validation: str = "test-set validation", pauses: Sequence[float] = ()) -> tuple[go.Figure, go.Figure]:
    """Loss and accuracy against epochs, as two figures: side by side on a projector, one above
    the other on a phone, each with its own title (app.py puts them in columns)."""
    return (learning_curve("loss", batches, history, epochs, x_max, max_points, lean, validation, pauses),
            learning_curve("accuracy", batches, history, epochs, x_max, max_points, lean, validation, pauses))


def learning_curve(key: str, batches: list[dict[str, Any]], history: list[dict[str, Any]], epochs: int,
                   x_max: float | None = None, max_points: int = MAX_POINTS, lean: bool = False,
                   validation: str = "test-set validation", pauses: Sequence[float] = ()) -> go.Figure:
    """One metric against epochs: every few batches (raw, faint, and smoothed) and per epoch.

    The x axis spans x_max epochs: all planned epochs while training, so the curve's progress
    shows; only those trained for a finished or stopped run, so it fills the chart. A lean
    figure (the live one, sent to every watching page again and again) carries its values as
    float32 and no template: about a quarter of the bytes. Each pause is a dashed vertical line
    where it happened, in epochs.
    """
    x_max = x_max or max(1, epochs)
    figure = go.Figure()
    # Smoothing runs over every point; the chart gets at most max_points of them, which is all a
    # screen can show and keeps each live update small for a classroom of viewers.
    shown = thinned(len(batches), max_points)
    as_values = (lambda values: np.asarray(values, np.float32)) if lean else list
    x = as_values([batches[i]["progress"] * epochs for i in shown])
    every = [batch[key] for batch in batches]
    every_smoothed = smoothed(every)
    raw, smooth = as_values([every[i] for i in shown]), as_values([every_smoothed[i] for i in shown])
    figure.add_trace(go.Scatter(x=x, y=raw, mode="lines", line=dict(color=TRAIN_COLOUR, width=1), opacity=0.25,
                                name="training batches",
                                hovertemplate="epoch %{x:.2f}<br>%{y:.3f}<extra>batches</extra>"))
    figure.add_trace(go.Scatter(x=x, y=smooth, mode="lines", line=dict(color=TRAIN_COLOUR, width=2.5),
                                name="smoothed", hovertemplate="epoch %{x:.2f}<br>%{y:.3f}<extra>smoothed</extra>"))
    figure.add_trace(go.Scatter(x=[entry["epoch"] for entry in history], y=[entry[key] for entry in history],
                                mode="markers+lines", marker=dict(size=9, color=TRAIN_COLOUR, symbol="circle"),
                                line=dict(dash="dot"), name="training epochs",
                                hovertemplate="epoch %{x}<br>%{y:.3f}<extra>train</extra>"))
    validated = [entry for entry in history if f"val_{key}" in entry]
    if validated:
        figure.add_trace(go.Scatter(x=[entry["epoch"] for entry in validated], y=[entry[f"val_{key}"] for entry in validated],
                                    mode="markers+lines", marker=dict(size=9, color=VALIDATION_COLOUR, symbol="diamond"),
                                    line=dict(color=VALIDATION_COLOUR, width=2.5), name=validation,
                                    hovertemplate="epoch %{x}<br>%{y:.3f}<extra>validation</extra>"))
    for at in pauses:
        figure.add_vline(x=at, line=dict(color="#888", dash="dash", width=1.5), annotation_text="paused",
                         annotation_position="top", annotation_font=dict(size=12, color="#666"))
    figure.update_xaxes(title_text="epoch", range=[0, x_max * 1.02])
    if key == "accuracy":
        figure.update_yaxes(range=[0, 1], tickformat=".0%")
    else:
        figure.update_yaxes(rangemode="tozero")
    figure.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), font=FONT, uirevision=f"curve-{key}",
                         title=dict(text=CURVE_TITLES[key], x=0, xanchor="left", y=0.98),
                         template="none" if lean else TEMPLATE, plot_bgcolor="white", paper_bgcolor="white",
                         # Two entries to a row, below the axis title.
                         legend=dict(orientation="h", yanchor="top", y=-0.3, x=0, font=dict(size=13),
                                     entrywidth=0.5, entrywidthmode="fraction"),
                         hovermode="x unified")
    if lean:
        # What the template would set: room for the tick labels, and the legend clear of the axis titles.
        grid = dict(showgrid=True, gridcolor=GRID_COLOUR, zeroline=False, linecolor=GRID_COLOUR, automargin=True)
        figure.update_xaxes(**grid, title_standoff=6)
        figure.update_yaxes(**grid)
        figure.update_layout(legend_y=-0.34)
    return figure


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: list[str]) -> go.Figure:
    """Rows are the true classes, columns the predicted ones; a cell's colour is its share of the row.

    Drawn as one bar per cell, each a whole cell high and wide, not as a heatmap: Streamlit passes
    on a click on a bar but not on a heatmap (streamlit/streamlit#8760). Bars fill their cells in
    data units at any width, where square scatter markers (sized in pixels) would overlap on a phone.
    Each bar carries its cell as customdata: (true index, predicted index, count).
    """
    counts = np.asarray(matrix, dtype=int)
    size = len(class_names)
    row_share = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    true_index, predicted_index = np.divmod(np.arange(size * size), size)
    shares, cell_counts = row_share.ravel(), counts.ravel()
    words = [f"true {class_names[t]}, predicted {class_names[p]}<br>{count} images ({share:.0%} of the {class_names[t]}s)"
             for t, p, count, share in zip(true_index, predicted_index, cell_counts, shares)]
    figure = go.Figure(go.Bar(
        x=[class_names[p] for p in predicted_index], y=np.ones(size * size), base=true_index - 0.5, width=1,
        customdata=np.stack([true_index, predicted_index, cell_counts], axis=1).tolist(),  # as a numpy array it reaches the browser typed, and a clicked cell came back as a dict
        marker=dict(color=shares, colorscale="Blues", cmin=0, cmax=1, showscale=False,  # the numbers say it
                    line=dict(color="white", width=1)),
        text=[str(count) for count in cell_counts] if size <= 20 else None, textposition="inside",
        insidetextanchor="middle", textangle=0,
        textfont=dict(size=14, color=["white" if share > 0.5 else "#222" for share in shares]),
        hovertext=words, hovertemplate="%{hovertext}<extra></extra>",
        unselected=dict(marker=dict(opacity=0.35)),  # a clicked cell stands out, the rest stay readable
    ))
    # Every class named on both axes, even on a phone, where Plotly would otherwise skip every other one.
    tick_font = dict(size=13)
    figure.update_layout(height=520, margin=dict(l=10, r=10, t=10, b=10), font=FONT, template=TEMPLATE, bargap=0,
                         xaxis=dict(title="predicted class", side="bottom", tickangle=-45, tickfont=tick_font,
                                    categoryorder="array", categoryarray=class_names, tickmode="array",
                                    tickvals=class_names, showgrid=False, fixedrange=True),
                         yaxis=dict(title="true class", range=[size - 0.5, -0.5], tickmode="array",
                                    tickvals=list(range(size)), ticktext=class_names, tickfont=tick_font,
                                    showgrid=False, zeroline=False, fixedrange=True),
                         hovermode="closest")
    return figure


def confusion_heatmap(matrix: Sequence[Sequence[int]], class_names: list[str]) -> go.Figure:
    """The whole matrix of many classes at a glance: where the mistakes are. The diagonal (the right
    answers) is left blank, so the colours spread over the mistakes; each cell's words are in its hover.
    Not clickable (streamlit/streamlit#8760): the list of top confusions opens a cell's pictures."""
    counts = np.asarray(matrix, dtype=int)
    size = len(class_names)
    row_share = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    mistakes = np.where(np.eye(size, dtype=bool), np.nan, row_share)
    words = [[f"true {class_names[t]}, predicted {class_names[p]}<br>{counts[t, p]} images ({row_share[t, p]:.0%})"
              for p in range(size)] for t in range(size)]
    figure = go.Figure(go.Heatmap(z=mistakes, x=list(range(size)), y=list(range(size)), colorscale="Reds", zmin=0,
                                  zmax=max(0.05, float(np.nanmax(mistakes)) if size > 1 else 0.05),
                                  text=words, hovertemplate="%{text}<extra></extra>", xgap=0, ygap=0,
                                  # Below the matrix, not beside it: on a phone the matrix keeps the width.
                                  colorbar=dict(orientation="h", y=-0.12, yanchor="top", thickness=10, tickformat=".0%",
                                                title=dict(text="share of the true class", side="top",
                                                           font=dict(size=12)))))
    figure.update_layout(height=560, margin=dict(l=10, r=10, t=10, b=10), font=FONT, template=TEMPLATE,
                         xaxis=dict(title="predicted class", showticklabels=False, showgrid=False, zeroline=False,
                                    fixedrange=True, constrain="domain"),
                         yaxis=dict(title="true class", autorange="reversed", showticklabels=False, showgrid=False,
                                    zeroline=False, fixedrange=True, scaleanchor="x", constrain="domain"),
                         hovermode="closest")
    return figure


def per_class_accuracy(accuracy_by_class: dict[str, float]) -> go.Figure:
    names = list(accuracy_by_class)
    values = [accuracy_by_class[name] for name in names]
    figure = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=TRAIN_COLOUR,
                              text=[f"{value:.0%}" for value in values], textposition="auto",
                              hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    figure.update_layout(height=max(260, 28 * len(names)), margin=dict(l=10, r=10, t=10, b=10), font=FONT, template=TEMPLATE,
                         xaxis=dict(range=[0, 1], tickformat=".0%", title="test accuracy"),
                         yaxis=dict(autorange="reversed"))
    return figure


RIGHT_COLOUR, WRONG_COLOUR, TOP_COLOUR, OTHER_COLOUR = "#2ca02c", "#d62728", "#1f77b4", "#c6d4e1"


def class_probabilities(probabilities: Sequence[float], class_names: list[str], true_class: str | None = None) -> go.Figure:
    """Horizontal bars over the classes: all of them, or with many classes the top few and the true
    class (cifar/results.py), the rest summed up in words below. Colour means right or wrong: the
    network's top class is green when it is the true class and red when it is not; with no true
    class known (a user's picture) it is plain blue. The true class is named as such and outlined."""
    values = np.asarray(probabilities, dtype=float)
    best = int(values.argmax())
    true_index = class_names.index(true_class) if true_class in class_names else None
    shown = top_classes(values, TOP_CLASSES, true_index) if many_classes(class_names) else list(range(len(values)))
    top = TOP_COLOUR if true_class is None else RIGHT_COLOUR if class_names[best] == true_class else WRONG_COLOUR
    colours = [top if i == best else OTHER_COLOUR for i in shown]
    outline = [2.5 if i == true_index else 0 for i in shown]
    labels = [f"{class_names[i]} (true class)" if i == true_index else class_names[i] for i in shown]
    figure = go.Figure(go.Bar(x=values[shown], y=labels, orientation="h",
                              marker=dict(color=colours, line=dict(color="#333", width=outline)),
                              text=[f"{values[i]:.0%}" for i in shown], textposition="outside", cliponaxis=False,
                              hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    rest = len(values) - len(shown)
    bottom = 10
    if rest:
        bottom = 50
        # Right-aligned, so a narrow column's chart keeps it whole: it may reach under the class names.
        figure.add_annotation(text=f"The other {rest} classes: {max(0.0, 1 - values[shown].sum()):.0%} together",
                              xref="paper", yref="paper", x=1, y=0, yshift=-8, yanchor="top", xanchor="right",
                              showarrow=False, font=dict(size=14, color="#555"))
    figure.update_layout(height=max(240, 26 * len(shown) + bottom), margin=dict(l=10, r=40, t=10, b=bottom),
                         font=FONT, template=TEMPLATE,
                         xaxis=dict(range=[0, 1.1], tickformat=".0%", showgrid=False, showticklabels=not rest),
                         yaxis=dict(autorange="reversed"))
    return figure
