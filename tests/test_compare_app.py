"""The Compare runs tab through Streamlit's AppTest: the dropout experiment's button, and two
trained runs compared, addressed by their widgets' keys (fixtures and helpers of tests/test_app.py)."""
from __future__ import annotations

import dataclasses
import json

from cifar.config import TrainConfig, dropout_experiment, held_out_size
from cifar.runstore import ENDED, SAVED, RunStore
from tests.test_app import new_app, page_text, quick_settings, runs_dir, train_to_the_end, wait_for  # noqa: F401

EVERY_STATE = ("queued", "running", *ENDED)


def compare_traces(at, metric: str = "accuracy") -> list[dict]:
    charts = [chart for chart in at.get("plotly_chart") if chart.proto.id and f"compare_{metric}" in chart.key]
    assert len(charts) == 1, [chart.key for chart in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)["data"]


def differing_fields(first: TrainConfig, second: TrainConfig) -> set[str]:
    return {field.name for field in dataclasses.fields(TrainConfig)
            if getattr(first, field.name) != getattr(second, field.name)}


def test_the_dropout_experiment_queues_two_runs_that_differ_only_in_dropout_and_compares_them(runs_dir):
    at = new_app()
    assert "How long they take is not known yet on this server" in page_text(at)  # nothing trained here yet
    at.button(key="dropout_experiment").click().run()
    assert not at.exception and not at.error, page_text(at)
    runs = RunStore(runs_dir).runs(EVERY_STATE)
    assert len(runs) == 2
    assert differing_fields(runs[0].config, runs[1].config) == {"conv_dropout", "dense_dropout"}
    assert {run.config for run in runs} == set(dropout_experiment())
    assert sorted(at.session_state["compare_runs"]) == sorted(run.run_id for run in runs)
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(run.run_id for run in runs)
    assert at.session_state["tab"] == "Compare runs"
    assert any(text.startswith("**Comparing conv dropout 0.0, dense dropout 0.0 vs") for text in page_text(at).splitlines())
    names = [trace["name"] for trace in compare_traces(at)]
    assert all("dropout" in name for name in names) and len(names) == 4  # training and validation for each run
    # It fills in as the runs train: the first epoch's point arrives without another click.
    wait_for(at, lambda at: any(trace.get("y") for trace in compare_traces(at)), timeout=180)
    # A run's label changes when it starts and when it is saved; the choice stays.
    first = at.session_state["compare_runs"][0]
    wait_for(at, lambda at: RunStore(runs_dir).get(first).state in SAVED, timeout=180)
    at.run()
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(run.run_id for run in runs)
    assert not at.exception


def test_two_trained_runs_compared_are_named_by_their_dense_dropout(runs_dir):
    at = new_app()
    ids = []
    for dense_dropout in (0.0, 0.5):
        quick_settings(at, epochs=2)
        at.slider(key="dense_dropout").set_value(dense_dropout).run()
        train_to_the_end(at)
        ids.append(at.session_state.run_id)
    at.session_state["tab"] = "Compare runs"
    at.multiselect(key="compare_runs").set_value(ids).run()
    assert not at.exception and not at.error, page_text(at)
    assert "**Comparing dense dropout 0.0 vs 0.5.**" in page_text(at)
    assert "Both together take about" in page_text(at)  # the server has measured its speed now
    traces = compare_traces(at)
    held = f"held-out validation ({held_out_size(800)} images)"  # quick_settings trains on 800 images
    assert {trace["name"] for trace in traces} == {"dense dropout 0.0", f"dense dropout 0.0: {held}",
                                                   "dense dropout 0.5", f"dense dropout 0.5: {held}"}
    assert all(len(trace["y"]) == 2 for trace in traces)  # two epochs each, from the store's events
    table = at.table[0].value
    assert list(table["Run"]) == ["dense dropout 0.0", "dense dropout 0.5"]
    assert all(value.endswith("%") for value in table["Test"])
