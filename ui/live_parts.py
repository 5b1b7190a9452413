"""Parts of a page that are drawn again every few seconds while a run trains: its progress, the
queue, the live curves.

Two ways to keep them fresh, chosen per server with CIFAR_LIVE_UPDATES (or LIVE_UPDATES in the
secrets):

- "poll", the plain way: each part is an `st.fragment` with `run_every`. The browser asks for it
  again on a timer, and every ask is a script run on the server: a new thread, a session message,
  a reply of several messages. With a class of 30 watching, that is most of the web server's work.
- "stream", the default: the page's script draws everything, then stays in `follow()`, drawing
  each part again into its own `st.empty()` when it is due, as Streamlit's own live-update
  examples do. A redraw is one or two small messages and no script run. A widget touched
  meanwhile still reruns the page within half a second: `follow()` looks for the request on
  each beat and hands over.

A part's `draw` may call `st.rerun(scope="app")` when what it shows needs the whole page drawn
again (a run started or ended, the queue changed). With keyed widgets or elements, a part drawn
again in one script run needs a fresh key each time: `key()` gives one.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Optional

import streamlit as st

MODES = ("stream", "poll")
NAP_SECONDS = 0.5  # the beat on which a streaming page wakes, to redraw or to see whether a widget asked for a rerun
START_SECONDS = 0.3  # after a run that does not stream, how soon the one that does starts


def live_mode(secret_value: Optional[str] = None) -> str:
    """The server's setting, from the environment or the secrets; "stream" unless it says "poll"."""
    value = (os.environ.get("CIFAR_LIVE_UPDATES") or secret_value or "stream").strip().lower()
    return value if value in MODES else "stream"


def rerun_requested() -> bool:
    """Whether this session has been asked to run again (a widget, a closed tab) since it started.

    Streamlit acts on such a request when the script next draws something; this only lets a
    streaming page draw at once instead of at its next redraw. It reads ScriptRequests' state,
    which is not public: should it move, a page still answers, at its next redraw.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    requests = getattr(get_script_run_ctx(), "script_requests", None)
    state = getattr(requests, "_state", None)
    return state is not None and getattr(state, "name", "CONTINUE") != "CONTINUE"


@dataclass
class _Part:
    seconds: float
    slot: Any
    draw: Callable[..., Any]
    args: tuple[Any, ...]
    due: float


@dataclass
class LiveParts:
    stream: bool
    parts: list[_Part] = field(default_factory=list)
    rounds: int = 0

    def add(self, seconds: float, draw: Callable[..., Any], *args: Any) -> None:
        """Draw `draw(*args)` here now, and again every `seconds` while the page stays."""
        if not self.stream:
            st.fragment(draw, run_every=seconds)(*args)
            return
        slot = st.empty()
        with slot.container():
            draw(*args)
        self.parts.append(_Part(seconds, slot, draw, args, next_beat(seconds)))

    def key(self, name: str) -> str:
        """A key for an element inside a part: the same each time when polling; new for each
        redraw when streaming, since one script run may not use a key twice."""
        return f"{name}_{self.rounds}" if self.stream and self.rounds else name

    def follow(self, layout: Hashable) -> None:
        """Last in the script. Streaming, it redraws each part when due, until one of them asks
        for the whole page again, or the session is asked to run again or to end.

        The browser removes what a script run did not draw only when that run ends: whatever the
        run before drew and this one does not (a button of a run that has left the queue) would
        stay on screen, greyed, while this one streams. So a page streams only in a run that
        follows one that ended with the same `layout` (what decides which elements the page
        has): a run that ends here asks for that next run, a moment later, which draws the same
        page again, then stays. Should that run find another layout, it ends and asks again.
        """
        if not self.stream or not self.parts:
            return
        if st.session_state.pop(_STREAM_THIS_RUN, None) == layout:
            self._stream()
        else:
            st.session_state[_STREAM_ARMED] = False
            st.session_state[_LAYOUT] = layout
            st.fragment(_stream_next_run, run_every=START_SECONDS)()

    def _stream(self) -> None:
        # The run goes on while it streams: Streamlit's "Running…" badge would show all the time.
        st.html("<style>[data-testid='stStatusWidget']{visibility:hidden}</style>")
        answered_early = False
        while True:
            due = min(part.due for part in self.parts)
            while (left := due - time.monotonic()) > 0:
                if rerun_requested() and not answered_early:
                    break  # drawing now hands the script over to the requested run
                time.sleep(min(left, next_beat(NAP_SECONDS) - time.monotonic()))
            now = time.monotonic()
            # A request that drawing did not act on (one Streamlit holds back) is not answered early again.
            answered_early = now < due
            self.rounds += 1
            for part in [part for part in self.parts if part.due <= now] or self.parts[:1]:
                with part.slot.container():
                    part.draw(*part.args)
                part.due = next_beat(part.seconds)


def next_beat(seconds: float) -> float:
    """The next multiple of `seconds` on the monotonic clock, which every session of the server
    shares: all pages wake and redraw together, a few times a second, rather than each at its
    own moments, so a training worker on the same core is interrupted a few times a second, not
    a hundred."""
    now = time.monotonic()
    return (math.floor(now / seconds) + 1) * seconds


_STREAM_THIS_RUN = "live_parts_stream"
_STREAM_ARMED = "live_parts_armed"
_LAYOUT = "live_parts_layout"


def _stream_next_run() -> None:
    """Drawn at the end of a run that does not stream; its first timed run starts one that does."""
    if st.session_state.get(_STREAM_ARMED):
        st.session_state[_STREAM_THIS_RUN] = st.session_state.get(_LAYOUT)
        st.rerun(scope="app")
    st.session_state[_STREAM_ARMED] = True
