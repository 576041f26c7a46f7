"""Notebook 6's code exercise: the student's liveness timer, on fake time and against the daemon.

The student writes ``liveness(now, last_received, last_sent)``, the decision the daemons' timer
makes (``core/session.py: Session.handle_timer``): ``"close"`` once the peer has been silent for
``LIVENESS_TIMEOUT_S`` (6 s, counted from the last datagram *received*), else ``"keepalive"``
once we have sent nothing for ``KEEPALIVE_INTERVAL_S`` (2 s), else ``None``. Time is an
argument (as in the sans-IO core): the function never reads a clock, so a fake one tests it.

Two checks, both without sleeping in the student's function:

- :func:`on_fake_time`: the decisions at chosen instants, the boundaries exactly (6.0 s closes,
  5.999 s does not), then a fake clock stepped through a silent peer: keepalives at 2 s and
  4 s, the close at 6 s, as the real core ``Session`` decides on the same clock
  (:func:`daemon`; the instants' expected decisions are the core's too, a unit test checks).
- :func:`against_daemon`: the timeline the lab measured when the server was killed (the
  server's last datagram, the client's keepalives after it, the moment the client declared the
  peer lost), replayed through the student's function: the same keepalives (within 0.3 s) and
  the same end (within 0.6 s).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from vpnlab.core.constants import LIVENESS_TIMEOUT_S, PORT
from vpnlab.core.formats import Established
from vpnlab.core.reasons import Close
from vpnlab.core.session import DEFAULT_TIMEOUTS, Counters, Session
from vpnlab.course.notebook import CourseLab, wait_for
from vpnlab.instruments import capture
from vpnlab.wire.plain import PlainProtection

Decide = Callable[[float, float, float], "str | None"]
STEP_S = 0.01
"""The fake clock's tick."""
TIE_S = 0.3
"""How far the student's keepalives may fall from the client's; one due this close to the
close is a tie, not compared."""
CLIENT, SERVER = "192.0.2.2", "198.51.100.2"
SERVER_SAYS = "datagram from the server"
"""Notebook 6's label of the server's datagrams on r1's eth0."""

INSTANTS = [  # (now, last_received, last_sent, decision, why)
    (1.0, 0.0, 0.0, None, "1 s after both: nothing to do"),
    (1.999, 0.0, 0.0, None, "just before the keepalive interval"),
    (2.0, 0.0, 0.0, "keepalive", "2 s without sending: a keepalive"),
    (3.0, 2.5, 0.5, "keepalive", "the keepalive counts from the last *sent*, not received"),
    (3.0, 0.0, 2.5, None, "sent 0.5 s ago: no keepalive yet, peer silent only 3 s"),
    (5.999, 0.0, 4.5, None, "5.999 s of silence: not yet lost"),
    (6.0, 0.0, 4.5, "close", "6 s of silence exactly: lost"),
    (7.0, 0.0, 6.5, "close", "lost, however recently we sent"),
    (8.0, 0.0, 0.0, "close", "lost wins over a due keepalive"),
    (9.0, 7.0, 1.0, "keepalive", "silence counts from the last *received*: 2 s, alive"),
]


@dataclass(frozen=True)
class Timeline:
    """What the lab measured around ``kill -9`` of the server, in seconds from the kill."""

    last_received: float
    """The server's last datagram reaching the client (at or before 0)."""
    last_sent_before: float
    """The client's last datagram before that one (its keepalive clock then)."""
    sent_after: list[float]
    """The client's datagrams (keepalives) after the server's last one."""
    lost: float
    """When the client logged 'peer lost'."""

    @classmethod
    def from_events(cls, events: list[tuple[float, str, str]], lost: float) -> Timeline:
        """From notebook 6's capture events ``(t, "r1 sends" | "r2 answers", label)``."""
        last = max(t for t, _, label in events if label == SERVER_SAYS and t <= 0)
        sends = [t for t, who, _ in events if who == "r1 sends"]
        before = [t for t in sends if t <= last]
        after = [t for t in sends if last < t <= lost]
        if before:
            return cls(last, before[-1], after, lost)
        # the capture began after the client's last send before it: the first one after
        # sets the keepalive clock, the ones after that are compared
        return cls(last, after[0], after[1:], lost) if after else cls(last, last, [], lost)


def measure(lab: CourseLab, folder: Path = Path("work")) -> Timeline:
    """The real daemon's timeline: the VPN (re)started, r1's eth0 captured from 4.5 s before
    ``kill -9`` of the server until the client logs 'peer lost' (the VPN stopped after)."""
    lab.start_vpn()
    server, lost_before = lab.daemon_pid("server"), lab.log("client-r1").count(Close.PEER_LOST)
    if server is None:
        raise ValueError("the server is not running")
    with capture.start_capture(
        lab.prefix, "r1", "eth0", folder / "liveness-exercise.pcapng", 100, 20, "udp port 4500"
    ) as cap:
        time.sleep(4.5)  # a keepalive from each side before the kill
        killed = time.time()
        os.kill(server, signal.SIGKILL)
        noticed = wait_for(
            lambda: lab.log("client-r1").count(Close.PEER_LOST) > lost_before,
            LIVENESS_TIMEOUT_S + 4,
            0.05,
        )
        lost = time.time() - killed
    lab.stop_vpn()
    if not noticed:
        raise ValueError(f"the client logged no 'peer lost' {LIVENESS_TIMEOUT_S + 4:g} s after")
    events = [
        (float(t) - killed, *(("r1 sends", "") if src == CLIENT else ("r2 answers", SERVER_SAYS)))
        for t, src in capture.fields(cap.path, ["frame.time_epoch", "ip.src"])
    ]
    return Timeline.from_events(events, lost)


def simulate(
    decide: Decide, last_received: float, last_sent: float, until: float
) -> tuple[list[float], float | None]:
    """A fake clock from ``last_received`` to ``until`` with a silent peer: the times of the
    keepalives ``decide`` asks for (each resets ``last_sent``) and of its close (or None)."""
    keepalives: list[float] = []
    steps = round((until - last_received) / STEP_S)
    for i in range(steps + 1):
        now = round(last_received + i * STEP_S, 6)
        decision = decide(now, last_received, last_sent)
        if decision == "close":
            return keepalives, now
        if decision == "keepalive":
            keepalives.append(now)
            last_sent = now
    return keepalives, None


def daemon(now: float, last_received: float, last_sent: float) -> str | None:
    """The daemons' own decision: a real core ``Session`` (plain format) whose clocks stand
    at ``last_received`` and ``last_sent``, asked ``handle_timer(now)``."""
    session = Session(
        ("198.51.100.2", PORT),
        Established(PlainProtection(), IPv4Interface("10.8.0.2/24")),
        0.0,
        Counters(),
        [],
        DEFAULT_TIMEOUTS,
    )
    session.last_received, session.last_sent = last_received, last_sent
    if session.handle_timer(now) is Close.PEER_LOST:
        return "close"
    return "keepalive" if session.outbox else None


def on_fake_time(liveness: Decide) -> dict[str, bool]:
    """The student's decisions at :data:`INSTANTS` and along a silent peer's fake clock."""
    facts = {}
    for now, received, sent, want, why in INSTANTS:
        try:
            got = liveness(now, received, sent)
        except Exception as exc:  # the student's bug: a fact, not a traceback
            got = f"{type(exc).__name__}: {exc}"
        facts[f"now={now}, last_received={received}, last_sent={sent}: {want!r} ({why})"] = (
            got == want
        )
    timeline: object
    try:
        timeline = simulate(liveness, 0.0, 0.0, 10.0)
    except Exception as exc:
        timeline = ([], f"{type(exc).__name__}: {exc}")
    facts["a silent peer on a fake clock: keepalives at 2 s and 4 s, close at 6 s"] = (
        timeline == simulate(daemon, 0.0, 0.0, 10.0)
    )
    return facts


def against_daemon(liveness: Decide, timeline: Timeline) -> dict[str, bool]:
    """The student's timer replayed on the timeline the real client lived through."""
    try:
        keepalives, close = simulate(
            liveness, timeline.last_received, timeline.last_sent_before, timeline.lost + 3.0
        )
    except Exception as exc:
        print(f"liveness: {type(exc).__name__}: {exc}")
        keepalives, close = [], None
    print(
        f"the client: keepalives at {[round(t, 2) for t in timeline.sent_after]}, "
        f"peer lost at {timeline.lost:.2f} s; yours: keepalives at "
        f"{[round(t, 2) for t in keepalives]}, close at {close}"
    )
    # A keepalive due within TIE_S of the close is a tie that the daemon's wake-ups and this
    # replay's STEP_S grid may break either way: the keepalives before it must match.
    yours = [t for t in keepalives if t < timeline.lost - TIE_S]
    client = [t for t in timeline.sent_after if t < timeline.lost - TIE_S]
    return {
        "your keepalives fall when the client's did (within 0.3 s)": len(yours) == len(client)
        and all(abs(a - b) <= TIE_S for a, b in zip(yours, client, strict=True)),
        "you close when the client declared the server lost (within 0.6 s)": close is not None
        and abs(close - timeline.lost) <= 0.6,
    }
