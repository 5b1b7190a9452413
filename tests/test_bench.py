"""Smoke tests of the benchmark scripts: they run end to end at a tiny size and print their verdicts.

Timings and ratios on a shared CI machine mean nothing, so these never check a time or a ratio,
only that each script finishes, reports both sides and fails loudly when a side fails.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--train-size", "300"]  # a few steps: enough to exercise every path in seconds


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_bench_train_speed_smoke_prints_both_sides_and_the_ratio_lines(tiny_archive):
    result = bench("train_speed.py", "--data", str(tiny_archive), *TINY, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^seed script\s+[\d,]+\s+[\d,]+\s+[01]\.\d{4}$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^our core\s+[\d,]+\s+[\d,]+\s+[01]\.\d{4}$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^speed ratio \(ours / seed\): \d+\.\d\dx$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^accuracy difference \(ours - seed\): [+-]\d+\.\d points$", result.stdout, re.MULTILINE), result.stdout


def test_bench_time_to_accuracy_smoke_prints_both_runs_and_a_verdict(tiny_archive):
    result = bench("time_to_accuracy.py", "--data", str(tiny_archive), *TINY)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^seed script, 1st epoch\s+[\d.]+ s\s+[01]\.\d{4}", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^quick demo, whole command\s+[\d.]+ s\s+[01]\.\d{4}", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^quick reached >= 60% in less time than the seed's first epoch: (yes|no \(.+\))$",
                     result.stdout, re.MULTILINE), result.stdout


def test_bench_train_speed_exits_non_zero_with_the_error_when_a_side_fails(tmp_path):
    broken = tmp_path / "cifar-10-python.tar.gz"
    broken.write_bytes(b"not a gzip archive")
    result = bench("train_speed.py", "--data", str(broken), *TINY, "--epochs", "1")
    assert result.returncode != 0
    assert "seed script failed" in result.stderr and "DataError" in result.stderr
    assert "speed ratio" not in result.stdout


def test_bench_app_start_smoke_times_a_real_server_and_browser():
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        pytest.skip(f"no Chromium at {chromium}")
    result = bench("app_start.py", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^median of 1: server healthy \d+\.\d\d s, controls visible \d+\.\d\d s after `streamlit run`$",
                     result.stdout, re.MULTILINE), result.stdout


def test_bench_classroom_smoke_prints_both_speeds_every_student_and_the_memory(tiny_archive):
    students = 3
    result = bench("classroom.py", "--data", str(tiny_archive), "--students", str(students), "--window", "3",
                   "--train-size", "2000", "--epochs", "200")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Two watched rounds by default, so three unwatched windows around them.
    assert re.search(r"^training unwatched: [\d,]+ images/s \(windows: [\d,]+, [\d,]+, [\d,]+\)$", result.stdout,
                     re.MULTILINE), result.stdout
    assert re.search(rf"^training watched by {students} students: [\d,]+ images/s \(windows: [\d,]+, [\d,]+\)$",
                     result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^watched/unwatched speed ratio: \d+\.\d\d \(each watched window against its neighbours: "
                     r"\d+\.\d\d, \d+\.\d\d\)$", result.stdout, re.MULTILINE), result.stdout
    student_line = re.compile(r"^student +(\d+): updates every \d+\.\d\d s \(max \d+\.\d\d s\), [\d,]+\.\d kB/s "
                              r"\(first half [\d,]+\.\d, second half [\d,]+\.\d\)$")
    numbers = [int(match.group(1)) for line in lines if (match := student_line.match(line))]
    assert numbers == list(range(1, students + 1)), result.stdout
    assert re.search(r"^the whole curve on every page \d+\.\d\d s after it opened at the latest \(median \d+\.\d\d s; "
                     rf"all {students} opened at once\)$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^worst update interval: \d+\.\d\d s$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^worst bytes per second: [\d,]+\.\d kB/s$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^server \+ worker RSS peak: [\d,]+ MB \(server [\d,]+ MB, worker [\d,]+ MB\)$",
                     result.stdout, re.MULTILINE), result.stdout


def test_bench_snapshot_cost_smoke_prints_both_sides_and_the_share(tiny_archive):
    result = bench("snapshot_cost.py", "--data", str(tiny_archive), *TINY, "--epochs", "1", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^epoch without snapshots: \d+\.\d\d s", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^epoch with snapshots: \d+\.\d\d s", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^snapshots' share of an epoch's training time: \d+\.\d\d% \(measured inside the run\); "
                     r"epoch time with/without: \d+\.\d{3}$", result.stdout, re.MULTILINE), result.stdout
