"""What a classroom watching one training run costs: training speed, updates and memory.

Starts `streamlit run app.py` (pinned to --server-cores; the training worker it starts inherits
that), opens the page once as a teacher would (an app may start its worker on first use), queues
one run straight into the run store, and measures training images/s from the run's events in
windows that take turns: nobody watching, --students simulated students watching
(bench/students.py, in a process of its own pinned to --student-cores), nobody watching, and so
on for --rounds watched windows. Comparing each watched window with the unwatched ones around
it cancels any drift in speed. Prints the speeds, each student's worst update interval and
bytes per second, and the peak resident memory of the server and its worker.

    python bench/classroom.py --data ~/cifar10/cifar-10-python.tar.gz --students 30 --window 30
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from app_start import free_port, healthy  # noqa: E402  (bench/ is on the path when this runs as a script)

SERVER_START_SECONDS = 120.0
FIRST_BATCH_SECONDS = 300.0  # TensorFlow's import and the data's loading come before the first batch
WARM_UP_SECONDS = 5.0  # the first steps after tracing run slower than the rest
SETTLE_SECONDS = 1.0  # after the students leave, for their sessions to close
STUDENTS_SECONDS = 240.0  # to join (students.py gives up at 180 s) or to report
EVENT_LAG_SECONDS = 30.0  # how long a window's end may wait for the batch event after it
MEMORY_SAMPLE_SECONDS = 0.5
STOP_SECONDS = 20.0


class BenchFailed(Exception):
    """The measurement cannot go on: the server died, the run failed, or something timed out."""


def pinned(command: list[str], cores: Optional[str]) -> list[str]:
    """The command under `taskset -c cores`, where taskset exists and there are cores to spare."""
    if cores is None or shutil.which("taskset") is None or not can_pin():
        return command
    return ["taskset", "-c", cores, *command]


def parse_cores(text: str) -> set[int]:
    """A taskset-style CPU list: "1", "0,2" or "1-3"."""
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else "(nothing)"


class Server:
    """`streamlit run app.py` in its own process group, so stopping it leaves no worker behind."""

    def __init__(self, port: int, data: str, runs_dir: Path, cores: Optional[str], log: Path, live: str) -> None:
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                   "--server.headless", "true", "--server.fileWatcherType", "none",
                   "--browser.gatherUsageStats", "false"]
        env = {**os.environ, "CIFAR10_DATA": data, "CIFAR_RUNS_DIR": str(runs_dir), "CIFAR_LIVE_UPDATES": live}
        self.port, self.log = port, log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(pinned(command, cores), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchFailed(f"the Streamlit server exited with code {self.process.returncode}: {last_line(self.log)}")

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not healthy(f"http://127.0.0.1:{self.port}"):
            self.check()
            if time.monotonic() > deadline:
                raise BenchFailed(f"the Streamlit server was not healthy within {SERVER_START_SECONDS:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate the server's whole group, then kill whatever of its tree is left."""
        tree = process_tree(self.process.pid)
        group = self.process.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(group, signal.SIGTERM)
            self.process.wait(timeout=STOP_SECONDS)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        for pid in tree:  # a child that left the group would otherwise outlive the bench
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def process_tree(root: int) -> list[int]:
    """The root and all its descendants, from /proc/*/stat's parent ids."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the command name may hold spaces
        except OSError:
            continue  # ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, waiting = [], [root]
    while waiting:
        pid = waiting.pop()
        tree.append(pid)
        waiting.extend(children.get(pid, []))
    return tree


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, its children's not included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemorySampler(threading.Thread):
    """Peak resident memory of the server, of its descendants (the worker), and of both at once."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.peak_total = self.peak_server = self.peak_worker = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            tree = process_tree(self.server_pid)
            server = rss_mb(self.server_pid)
            worker = sum(rss_mb(pid) for pid in tree[1:])
            self.peak_server = max(self.peak_server, server)
            self.peak_worker = max(self.peak_worker, worker)
            self.peak_total = max(self.peak_total, server + worker)
            self.done.wait(MEMORY_SAMPLE_SECONDS)


class TrainingSpeed:
    """The run's batch events as they arrive in the store, and the speed between two moments."""

    def __init__(self, store: Any, run_id: str, check: Callable[[], None]) -> None:
        self.store, self.run_id, self.check = store, run_id, check
        self.batches: list[tuple[float, int]] = []  # (time, images_done)
        self.seq = 0

    def fetch(self) -> None:
        self.check()
        for event in self.store.events_after(self.run_id, self.seq):
            self.seq = event["seq"]
            if event["event"] == "batch":
                self.batches.append((event["time"], event["images_done"]))
        run = self.store.get(self.run_id)
        if run.state not in ("queued", "running"):
            message = getattr(run, "message", "") or "no message"
            raise BenchFailed(f"the run ended ({run.state}) before the measurement did: {message}")

    def wait_for_first_batch(self) -> None:
        deadline = time.monotonic() + FIRST_BATCH_SECONDS
        while not self.batches:
            self.fetch()
            if time.monotonic() > deadline:
                state = self.store.get(self.run_id).state
                raise BenchFailed(f"no batch event within {FIRST_BATCH_SECONDS:.0f} s (the run is {state})")
            time.sleep(0.2)

    def sleep(self, seconds: float) -> None:
        """Sleep, still noticing a dead server or an ended run."""
        until = time.time() + seconds
        while time.time() < until:
            self.fetch()
            time.sleep(min(0.5, max(0.0, until - time.time())))

    def between(self, start: float, end: float) -> float:
        """Images/s from the last batch event at or before `start` to the last at or before `end`."""
        deadline = time.monotonic() + EVENT_LAG_SECONDS
        while not self.batches or self.batches[-1][0] <= end:  # a later event proves none before `end` is missing
            if time.monotonic() > deadline:
                raise BenchFailed(f"no batch event came in the {EVENT_LAG_SECONDS:.0f} s after a window")
            time.sleep(0.2)
            self.fetch()
        first = max((b for b in self.batches if b[0] <= start), default=None)
        last = max(b for b in self.batches if b[0] <= end)
        if first is None or last[0] <= first[0]:
            raise BenchFailed("fewer than two batch events in a window: make --window longer")
        return (last[1] - first[1]) / (last[0] - first[0])

    def window(self, seconds: float) -> float:
        start = time.time()
        self.sleep(seconds)
        return self.between(start, start + seconds)


class Students:
    """bench/students.py in its own process; its JSON lines arrive through a reader thread."""

    def __init__(self, port: int, query: str, count: int, cores: Optional[str], log: Path, visit: bool = False) -> None:
        command = [sys.executable, str(BENCH / "students.py"), "--port", str(port), "--query", query,
                   "--students", str(count), *(["--visit"] if visit else [])]
        if cores is not None and can_pin():
            command += ["--cores", cores]
        self.log = log
        with open(log, "wb") as errors:
            self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=errors, text=True)
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, key: str, check: Callable[[], None]) -> Any:
        deadline = time.monotonic() + STUDENTS_SECONDS
        while time.monotonic() < deadline:
            check()
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise BenchFailed(f"the students' process ended (code {self.process.wait()}): {last_line(self.log)}")
            reply = json.loads(line)
            if "error" in reply:
                raise BenchFailed(f"the students failed: {reply['error']}")
            return reply[key]
        raise BenchFailed(f"the students sent no {key!r} within {STUDENTS_SECONDS:.0f} s")

    def leave(self, start: float, end: float, check: Callable[[], None]) -> list[dict[str, Any]]:
        self.process.stdin.write(json.dumps({"window": [start, end]}) + "\n")
        self.process.stdin.flush()
        report = self.next_line("students", check)
        self.process.wait(timeout=STUDENTS_SECONDS)
        return report

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def open_page_once(port: int, cores: Optional[str], log: Path, check: Callable[[], None]) -> None:
    """Open the page once and leave, as a teacher does first: an app that starts its training
    worker on first use (a cache_resource) starts it now, with nobody left watching."""
    visit = Students(port, "", 1, cores, log, visit=True)
    try:
        visit.next_line("visited", check)
        visit.process.wait(timeout=STUDENTS_SECONDS)
    finally:
        visit.stop()


def watched_window(speed: TrainingSpeed, students: Students, seconds: float,
                   server_pid: int) -> tuple[float, list[dict[str, Any]], float]:
    """Once every student has its first chart: the training speed, what each student saw, and the
    web server's CPU use (share of one core)."""
    students.next_line("joined", speed.fetch)
    start, cpu = time.time(), cpu_seconds(server_pid)
    speed.sleep(seconds)
    server_cpu = (cpu_seconds(server_pid) - cpu) / (time.time() - start)
    report = students.leave(start, start + seconds, speed.fetch)
    failed = [student for student in report if student["error"]]
    if failed:
        raise BenchFailed(f"student {failed[0]['number']} failed: {failed[0]['error']}")
    return speed.between(start, start + seconds), report, server_cpu


def worst_of(reports: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each student's worst over the watched rounds: the most bytes, the slowest updates, the latest chart."""
    worst = []
    for rounds in zip(*reports):
        student = dict(max(rounds, key=lambda report: report["bytes_per_second"]))
        for key in ("update_every", "update_max", "first_chart_seconds"):
            student[key] = max(report[key] for report in rounds)
        worst.append(student)
    return worst


def print_results(unwatched: list[float], watched: list[float], reports: list[list[dict[str, Any]]],
                  memory: MemorySampler, server_cpu: tuple[float, list[float]]) -> None:
    mean = statistics.mean(unwatched)
    windows = ", ".join(f"{speed:,.0f}" for speed in unwatched)
    students = len(reports[0])
    print(f"training unwatched: {mean:,.0f} images/s (windows: {windows})")
    print(f"training watched by {students} student{'s' if students != 1 else ''}: "
          f"{statistics.mean(watched):,.0f} images/s (windows: {', '.join(f'{speed:,.0f}' for speed in watched)})")
    # Each watched window against the mean of the unwatched windows on either side of it: drift cancels.
    each = [speed / statistics.mean(unwatched[number:number + 2]) for number, speed in enumerate(watched)]
    print(f"watched/unwatched speed ratio: {statistics.mean(watched) / mean:.2f} "
          f"(each watched window against its neighbours: {', '.join(f'{ratio:.2f}' for ratio in each)})")
    report = worst_of(reports)
    width = max(2, len(str(len(report))))
    for student in report:
        print(f"student {student['number']:>{width}}: updates every {student['update_every']:.2f} s "
              f"(max {student['update_max']:.2f} s), {student['bytes_per_second'] / 1000:,.1f} kB/s "
              f"(first half {student['first_half_bytes_per_second'] / 1000:,.1f}, "
              f"second half {student['second_half_bytes_per_second'] / 1000:,.1f})")
    joins = [s["first_chart_seconds"] for s in report]
    print(f"the whole curve on every page {max(joins):.2f} s after it opened at the latest "
          f"(median {statistics.median(joins):.2f} s; all {len(report)} opened at once)")
    print(f"worst update interval: {max(s['update_max'] for s in report):.2f} s")
    print(f"worst bytes per second: {max(s['bytes_per_second'] for s in report) / 1000:,.1f} kB/s")
    print(f"server + worker RSS peak: {memory.peak_total:,.0f} MB "
          f"(server {memory.peak_server:,.0f} MB, worker {memory.peak_worker:,.0f} MB)")
    watched_cpu = ", ".join(f"{share:.0%}" for share in server_cpu[1])
    print(f"web server CPU: {server_cpu[0]:.0%} of a core unwatched, {watched_cpu} watched")


def measure(args: argparse.Namespace, workdir: Path) -> None:
    from cifar.config import PRESETS
    from cifar.runstore import RunStore

    runs_dir = workdir / "runs"
    runs_dir.mkdir()
    if can_pin():  # this process's polling stays off the server's cores too
        os.sched_setaffinity(0, parse_cores(args.student_cores))
    port = args.port or free_port()
    server = Server(port, args.data, runs_dir, args.server_cores, workdir / "server.log", args.live)
    print(f"pages kept fresh by: {args.live}")
    students: Optional[Students] = None
    memory = MemorySampler(server.process.pid)
    try:
        server.wait_until_healthy()
        memory.start()
        open_page_once(port, args.student_cores, workdir / "first-visit.log", server.check)
        store = RunStore(runs_dir)
        config = PRESETS["Seed recipe"].replace(epochs=args.epochs, train_size=args.train_size, validation="none")
        run_id = store.submit(config, owner="bench", owner_name="bench")
        speed = TrainingSpeed(store, run_id, server.check)
        speed.wait_for_first_batch()
        speed.sleep(WARM_UP_SECONDS)
        cpu, started = cpu_seconds(server.process.pid), time.time()
        unwatched = [speed.window(args.window)]
        idle_cpu = (cpu_seconds(server.process.pid) - cpu) / (time.time() - started)
        watched, reports, watched_cpu = [], [], []
        for _ in range(args.rounds):
            students = Students(port, f"run={run_id}", args.students, args.student_cores, workdir / "students.log")
            speed_watched, report, cpu_share = watched_window(speed, students, args.window, server.process.pid)
            students = None
            watched.append(speed_watched)
            reports.append(report)
            watched_cpu.append(cpu_share)
            speed.sleep(SETTLE_SECONDS)
            unwatched.append(speed.window(args.window))
        store.request_stop(run_id)
    finally:
        memory.done.set()
        if students is not None:
            students.stop()
        server.stop()
    print_results(unwatched, watched, reports, memory, (idle_cpu, watched_cpu))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--data", default=os.environ.get("CIFAR10_DATA"),
                        help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--epochs", type=int, default=50, help="enough that the run never ends on its own")
    parser.add_argument("--window", type=float, default=30.0, help="seconds in each measured window")
    parser.add_argument("--rounds", type=int, default=2,
                        help="watched windows, each between two unwatched ones (default 2: five windows in all)")
    parser.add_argument("--server-cores", default="0", help="taskset list for the server and its worker")
    parser.add_argument("--student-cores", default="1", help="CPU list for the students' process")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--live", choices=("stream", "poll"), default="stream",
                        help="how the pages stay fresh (CIFAR_LIVE_UPDATES): the app's default, streaming "
                             "redraws from one script run per page, or the plain way, a fragment run per redraw")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data is required when CIFAR10_DATA is not set")
    args.data = str(Path(args.data).expanduser().resolve())
    return args


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="classroom_"))
    try:
        measure(args, workdir)
    except BenchFailed as error:
        sys.exit(f"classroom failed: {error} (server and students' logs in {workdir})")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
