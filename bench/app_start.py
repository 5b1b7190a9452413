"""How long from `streamlit run app.py` to the app's controls on screen in a real browser.

Each round starts a fresh Streamlit server (as `streamlit run` does on a host that has just woken
the app) and opens the page in Chromium, launched beforehand so its own start-up is not counted.
Prints, per round and as medians: the seconds from launch until the server answers its health
check, and until the Train button is visible. The web server never imports TensorFlow; the
training worker that the first page starts does, in a process of its own.

    python bench/app_start.py --rounds 3
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
GIVE_UP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.read().decode() == "ok"
    except OSError:
        return False


def one_round(browser, runs_dir: str) -> tuple[float, float]:
    """(seconds to a healthy server, seconds to a visible Train button), both from the launch."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    launched = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "CIFAR_RUNS_DIR": runs_dir},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not healthy(url):
            if server.poll() is not None or time.perf_counter() - launched > GIVE_UP_SECONDS:
                sys.exit(f"the Streamlit server did not start (exit code {server.poll()})")
            time.sleep(0.05)
        serving = time.perf_counter() - launched
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("button", name="Train").wait_for(state="visible", timeout=GIVE_UP_SECONDS * 1000)
        controls = time.perf_counter() - launched
        page.close()
        return serving, controls
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rounds = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="app_start_runs_") as runs_dir:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        for number in range(1, args.rounds + 1):
            rounds.append(one_round(browser, runs_dir))
            print(f"round {number}: server healthy {rounds[-1][0]:.2f} s, Train visible {rounds[-1][1]:.2f} s "
                  "after `streamlit run`", flush=True)
        browser.close()
    print(f"median of {len(rounds)}: server healthy {statistics.median(r[0] for r in rounds):.2f} s, "
          f"controls visible {statistics.median(r[1] for r in rounds):.2f} s after `streamlit run`")


if __name__ == "__main__":
    main()
