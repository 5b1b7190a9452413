"""The sidebar's network settings through Streamlit's AppTest: the layer table before training, a
two-block run queued with its settings and trained on the plain path, settings that cannot go together."""
from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

from cifar.config import TWO_BLOCKS
from cifar.model import layer_table
from cifar.runstore import RunStore
from cifar.store import list_runs
from tests.test_app import APP, new_app, page_text, runs_dir, train_to_the_end  # noqa: F401 (runs_dir is a fixture)


def sidebar_table(at: AppTest) -> list[tuple]:
    """The sidebar's layer table as (name, kind, output shape, parameters) rows, read from its markdown."""
    text = next(element.value for element in at.sidebar.markdown if "layer-table" in element.value)
    rows = []
    for line in text.splitlines()[4:]:  # after the opening div, a blank line, the header and the alignment row
        if not line.startswith("|"):
            continue
        layer, output, parameters = (cell.strip() for cell in line.strip("|").split("|"))
        name, _, kind = layer.partition("<br>")
        rows.append((name, re.sub("<[^>]+>", "", kind), output, int(parameters.replace(",", ""))))
    return rows


def expected_rows(config) -> list[tuple]:
    return [(row.name, row.kind, "×".join(map(str, row.output_shape)), row.parameters)
            for row in layer_table(config, 10, (32, 32, 3))]


def test_the_sidebar_shows_the_layer_table_and_a_two_block_run_trains_with_its_settings(runs_dir):
    at = new_app()
    assert not at.exception
    seed_rows = sidebar_table(at)
    assert [row[0] for row in seed_rows] == ["scale_to_unit", "conv", "conv_dropout", "pool", "flatten", "dense",
                                             "dense_dropout", "class_probabilities"]
    assert sum(row[3] for row in seed_rows) == 4_200_842 and "4,200,842 parameters" in page_text(at)

    at.radio(key="preset").set_value("Two conv blocks").run()
    assert (at.slider(key="conv_blocks").value, at.number_input(key="filters").value,
            at.selectbox(key="kernel_size").value, at.number_input(key="dense_units").value) == (2, 32, 3, 512)
    assert sidebar_table(at) == expected_rows(TWO_BLOCKS)
    at.selectbox(key="kernel_size").set_value(5)
    at.number_input(key="dense_units").set_value(128)
    at.slider(key="epochs").set_value(1)
    at.number_input(key="train_size").set_value(800)
    at.run()
    chosen = TWO_BLOCKS.replace(kernel_size=5, dense_units=128, epochs=1, train_size=800)
    assert sidebar_table(at) == expected_rows(chosen)
    assert "2 conv blocks of 32, 64 5×5 filters, dense 128" in page_text(at)

    train_to_the_end(at)
    assert not at.exception and not at.error
    record = RunStore(runs_dir).get(at.session_state.run_id)
    assert record.config == chosen
    saved = list_runs(runs_dir)[0]
    assert saved.metrics["training_path"] == "plain" and saved.metrics["config"]["conv_blocks"] == 2
    assert saved.metrics["snapshots"][0]["filters"] and len(saved.metrics["snapshots"][0]["filters"]) == 5  # 5x5 kernels
    at.run()  # the server has now measured this network, and no other
    assert "These settings take about" in page_text(at)
    at.selectbox(key="kernel_size").set_value(3).run()
    assert "has not trained this network yet" in page_text(at)


def test_settings_that_cannot_go_together_are_said_and_train_nothing(runs_dir):
    at = new_app()  # the Quick demo starts its filters as PCA patterns: 54 at most for 3x3 kernels
    at.number_input(key="filters").set_value(64).run()
    assert not at.exception
    assert any("even number of filters up to 54, not 64" in error.value for error in at.sidebar.error), page_text(at)
    assert at.button(key="train").disabled
    at.selectbox(key="kernel_size").set_value(5).run()  # 5x5x3 patches give up to 150
    assert not at.sidebar.error and not at.button(key="train").disabled


def test_a_link_sets_the_network(runs_dir):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"preset": "two-blocks", "kernel_size": "5", "dense_units": "5000", "filters": "16"})
    at.run()
    assert at.radio(key="preset").value == "Two conv blocks"
    assert (at.slider(key="conv_blocks").value, at.number_input(key="filters").value,
            at.selectbox(key="kernel_size").value, at.number_input(key="dense_units").value) == (2, 16, 5, 512)
    assert any("dense_units=5000 was left out" in warning.value for warning in at.sidebar.warning)
