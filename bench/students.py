"""Simulated students: websocket clients that watch one Streamlit page as a browser tab does.

Each student speaks the protocol of Streamlit 1.67's frontend (App.tsx, WebsocketConnection and
ForwardMessageCache), minus the drawing:

- it connects to /_stcore/stream offering the subprotocols ``streamlit, PLACEHOLDER_AUTH_TOKEN``
  (the second slot carries an XSRF or host token; the server needs neither to serve a page) and
  sends one ``rerun_script`` with the page's query string and an empty page hash, as a tab
  opening ``/?<query>`` does;
- it keeps the page hash, and the query string a ``page_info_changed`` sets, for later reruns;
- ``auto_rerun`` starts a timer that sends a fragment ``rerun_script`` (``is_auto_rerun``) every
  ``interval`` seconds whether or not the last one has finished, as ``setInterval`` does; the same
  interval again leaves a running timer alone, another replaces it, ``stop_auto_rerun`` and a full
  run's ``new_session`` (one without fragment ids) stop timers;
- it caches messages marked ``cacheable`` by hash, resolves ``ref_hash`` messages from that cache,
  sends the hashes it holds with every rerun, and expires entries after
  ``max_cached_message_age`` successful runs, so the server sends unchanged big elements as
  small references, as it does to real browsers.

It records when each message arrived, its size, and whether it redrew the page. Run by
bench/classroom.py, which reads its JSON lines; on its own, with a window right after joining:

    python bench/students.py --port 8501 --query run=RUN_ID --students 3 --seconds 10

With --visit, one student opens the page, waits for its first run to finish and leaves: what the
first visitor does that makes an app start what it starts on first use.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from classroom import parse_cores

# The frontend puts this in the token slot when it has no XSRF cookie and no host token.
PLACEHOLDER_AUTH_TOKEN = "PLACEHOLDER_AUTH_TOKEN"
JOIN_TIMEOUT_SECONDS = 180.0  # 30 first page runs on one busy core can take a while
POLL_SECONDS = 0.05
# Deltas closer together than this are one redraw: a script run's, or a streaming page's round.
REDRAW_GAP_SECONDS = 0.25
FINISHED_RUNS = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


class CacheMiss(Exception):
    """A reference to a message the cache does not hold: the browser treats this as fatal."""


@dataclass
class Received:
    time: float
    size: int  # payload bytes of the websocket message
    update: bool  # the first delta of a script run: the page redrew
    reference: bool  # sent as a ref_hash to a cached message


@dataclass
class CacheEntry:
    encoded: bytes
    run_count: int  # the run count when it was last used
    fragment_id: str


class MessageCache:
    """The browser's ForwardMsgCache: cacheable messages by hash, expired by age in script runs."""

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}
        self.run_count = 0

    def hashes(self) -> list[str]:
        return list(self.entries)

    def keep(self, msg: ForwardMsg, encoded: bytes) -> None:
        if not msg.metadata.cacheable or not msg.hash:
            return
        if msg.hash in self.entries:
            self.entries[msg.hash].run_count = self.run_count
        else:
            fragment_id = msg.delta.fragment_id if msg.HasField("delta") else ""
            self.entries[msg.hash] = CacheEntry(encoded, self.run_count, fragment_id)

    def resolve(self, reference: ForwardMsg) -> ForwardMsg:
        entry = self.entries.get(reference.ref_hash)
        if entry is None:
            raise CacheMiss(f"the server referred to message {reference.ref_hash}, which this student never cached")
        entry.run_count = self.run_count
        msg = ForwardMsg.FromString(entry.encoded)
        msg.metadata.CopyFrom(reference.metadata)  # the reference says where this copy goes
        return msg

    def finish_run(self, max_age: int, fragment_ids: list[str]) -> None:
        """A run finished: expire entries unused for more than max_age runs (a fragment run only its own)."""
        self.run_count += 1
        for key, entry in list(self.entries.items()):
            if fragment_ids and entry.fragment_id not in fragment_ids:
                continue
            if self.run_count - entry.run_count > max_age:
                del self.entries[key]


class Student:
    """One browser tab on the page: connects, reruns on the server's timers, records what arrives."""

    def __init__(self, number: int, port: int, query_string: str) -> None:
        self.number = number
        self.url = f"ws://127.0.0.1:{port}/_stcore/stream"
        self.origin = f"http://127.0.0.1:{port}"
        self.query_string = query_string
        self.page_script_hash = ""  # unknown until the first new_session, as for a fresh tab
        self.cache = MessageCache()
        self.max_cached_message_age = 2  # Streamlit's default; the first new_session says
        self.timers: dict[str, tuple[float, asyncio.Task]] = {}
        self.received: list[Received] = []
        self.first_chart: Optional[float] = None
        self.opened = 0.0  # when the tab opened the page
        self.first_run_finished: Optional[float] = None
        self.error: Optional[str] = None
        self.websocket: Any = None
        self.last_delta = 0.0
        self.has_received_new_session = False
        self.cache_age_known = False

    async def watch(self, leave: asyncio.Event) -> None:
        """Stay on the page until `leave` is set; any failure is kept in `self.error`."""
        closer: Optional[asyncio.Task] = None
        self.opened = time.time()
        try:
            async with websockets.connect(self.url, subprotocols=["streamlit", PLACEHOLDER_AUTH_TOKEN],
                                          origin=self.origin, max_size=None, ping_interval=None) as websocket:
                self.websocket = websocket
                closer = asyncio.create_task(self.close_on(leave))
                await self.send_rerun()
                async for message in websocket:
                    self.handle(message, time.time())
                if not leave.is_set():
                    self.error = "the server closed the connection"
        except Exception as error:  # one student's failure is reported, not the whole class's
            if not leave.is_set() or isinstance(error, CacheMiss):
                self.error = f"{type(error).__name__}: {error}"
        finally:
            self.stop_timers()
            if closer is not None:
                closer.cancel()

    async def close_on(self, leave: asyncio.Event) -> None:
        await leave.wait()
        await self.websocket.close()

    def handle(self, encoded: bytes, now: float) -> None:
        msg = ForwardMsg.FromString(encoded)
        reference = msg.WhichOneof("type") == "ref_hash"
        if reference:
            msg = self.cache.resolve(msg)
        else:
            self.cache.keep(msg, encoded)
        kind = msg.WhichOneof("type")
        redraw = kind == "delta" and now - self.last_delta >= REDRAW_GAP_SECONDS
        self.received.append(Received(now, len(encoded), redraw, reference))
        if kind == "delta":
            self.last_delta = now
            element = msg.delta.new_element
            if self.first_chart is None and element.WhichOneof("type") == "plotly_chart":
                self.first_chart = now
        elif kind == "new_session":
            self.on_new_session(msg)
        elif kind == "script_finished":
            self.on_script_finished(msg)
        elif kind == "auto_rerun":
            self.on_auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                self.stop_timer(fragment_id)
        elif kind == "page_info_changed":
            self.query_string = msg.page_info_changed.query_string

    def on_new_session(self, msg: ForwardMsg) -> None:
        self.has_received_new_session = True
        if not self.cache_age_known:  # the frontend reads the cache's age limit once per connection
            self.max_cached_message_age = msg.new_session.config.max_cached_message_age
            self.cache_age_known = True
        if not msg.metadata.run.fragment_ids:  # a full run: every timer it needs, it starts again
            self.stop_timers()
            self.page_script_hash = msg.new_session.page_script_hash

    def on_script_finished(self, msg: ForwardMsg) -> None:
        if self.first_run_finished is None and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
            self.first_run_finished = time.time()
        run = msg.metadata.run
        if run.script_run_id and msg.script_finished in FINISHED_RUNS and self.has_received_new_session:
            self.cache.finish_run(self.max_cached_message_age, list(run.fragment_ids))

    def on_auto_rerun(self, fragment_id: str, interval: float) -> None:
        if not fragment_id:
            return  # the frontend ignores a page-wide auto-rerun
        running = self.timers.get(fragment_id)
        if running is not None and running[0] == interval:
            return  # re-registering must not restart the countdown
        self.stop_timer(fragment_id)
        self.timers[fragment_id] = (interval, asyncio.create_task(self.tick(fragment_id, interval)))

    async def tick(self, fragment_id: str, interval: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            try:
                await self.send_rerun(fragment_id)
            except websockets.exceptions.ConnectionClosed:
                return

    def stop_timer(self, fragment_id: str) -> None:
        running = self.timers.pop(fragment_id, None)
        if running is not None:
            running[1].cancel()

    def stop_timers(self) -> None:
        for fragment_id in list(self.timers):
            self.stop_timer(fragment_id)

    async def send_rerun(self, fragment_id: str = "") -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query_string
        state.widget_states.SetInParent()  # a student touches no widget
        state.page_script_hash = self.page_script_hash
        state.fragment_id = fragment_id
        state.is_auto_rerun = bool(fragment_id)
        state.cached_message_hashes.extend(self.cache.hashes())
        context = state.context_info
        context.timezone, context.timezone_offset, context.locale = "UTC", 0, "en-US"
        context.url = f"{self.origin}/?{self.query_string}" if self.query_string else f"{self.origin}/"
        context.is_embedded, context.color_scheme = False, "light"
        self.has_received_new_session = False
        await self.websocket.send(msg.SerializeToString())

    def report(self, start: float, end: float) -> dict[str, Any]:
        """What this student saw during [start, end): redraw gaps and bytes per second."""
        redraws = [r.time for r in self.received if r.update and r.time < end]
        full_gaps = [later - earlier for earlier, later in zip(redraws, redraws[1:]) if later > start]
        # A gap still open when the window closes counts too: it is how long the student has waited.
        waiting = end - max(redraws[-1] if redraws else start, start)
        middle = (start + end) / 2
        first = sum(r.size for r in self.received if start <= r.time < middle)
        second = sum(r.size for r in self.received if middle <= r.time < end)
        return {
            "number": self.number,
            "first_chart_seconds": (self.first_chart or end) - self.opened,
            "update_every": statistics.median(full_gaps) if full_gaps else waiting,
            "update_max": max([*full_gaps, waiting]),
            "bytes_per_second": (first + second) / (end - start),
            "first_half_bytes_per_second": first / (middle - start),
            "second_half_bytes_per_second": second / (end - middle),
            "updates": sum(1 for r in self.received if r.update and start <= r.time < end),
            "references": sum(1 for r in self.received if r.reference and start <= r.time < end),
            "messages": sum(1 for r in self.received if start <= r.time < end),
            "cached": len(self.cache.entries),
            "error": self.error,
        }


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def until_all(students: list[Student], watching: list[asyncio.Task], moment: str, what: str) -> float:
    """Wait until every student has reached `moment` (an attribute); returns when the last one did."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    while True:
        failed = [s for s in students if s.error]
        if failed:
            raise RuntimeError(f"student {failed[0].number} failed before joining: {failed[0].error}")
        reached = [getattr(s, moment) for s in students]
        if None not in reached:
            return max(reached)
        if time.monotonic() > deadline or all(task.done() for task in watching):
            raise RuntimeError(f"{reached.count(None)} of {len(students)} students got no {what} "
                               f"within {JOIN_TIMEOUT_SECONDS:.0f} s")
        await asyncio.sleep(POLL_SECONDS)


async def window_from_stdin() -> tuple[float, float]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed before the window was given")
    start, end = json.loads(line)["window"]
    return float(start), float(end)


async def classroom(args: argparse.Namespace) -> None:
    students = [Student(number, args.port, args.query) for number in range(1, args.students + 1)]
    leave = asyncio.Event()
    watching = [asyncio.create_task(student.watch(leave)) for student in students]
    try:
        if args.visit:
            emit({"visited": await until_all(students, watching, "first_run_finished", "finished page")})
            return
        joined = await until_all(students, watching, "first_chart", "chart")
        emit({"joined": joined})
        if args.seconds is not None:
            await asyncio.sleep(max(0.0, joined + args.seconds - time.time()))
            start, end = joined, joined + args.seconds
        else:
            start, end = await window_from_stdin()
    except RuntimeError as error:
        emit({"error": str(error)})
        return
    finally:
        leave.set()
        await asyncio.gather(*watching)
    emit({"students": [student.report(start, end) for student in students]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--query", default="", help="the page's query string, e.g. run=RUN_ID")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--cores", help="CPU cores to pin this process to, e.g. 1 or 1-3 (default: not pinned)")
    parser.add_argument("--seconds", type=float, help="report on this many seconds after joining "
                                                     "(default: read {\"window\": [start, end]} from stdin)")
    parser.add_argument("--visit", action="store_true", help="only open the page once and leave")
    args = parser.parse_args()
    if args.cores:
        os.sched_setaffinity(0, parse_cores(args.cores))
    asyncio.run(classroom(args))


if __name__ == "__main__":
    main()
