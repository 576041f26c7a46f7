"""Notebook 6's liveness exercise on a fake clock: its expected decisions are the real core's."""

from __future__ import annotations

from vpnlab.core.constants import KEEPALIVE_INTERVAL_S, LIVENESS_TIMEOUT_S
from vpnlab.course import liveness_exercise as exercise


def timer(close_s=LIVENESS_TIMEOUT_S, strict=False):
    def liveness(now, last_received, last_sent):
        silent = now - last_received
        if silent > close_s if strict else silent >= close_s:
            return "close"
        return "keepalive" if now - last_sent >= KEEPALIVE_INTERVAL_S else None

    return liveness


right = timer()


def test_INSTANTS_are_what_the_core_Session_decides():
    for now, received, sent, want, why in exercise.INSTANTS:
        assert exercise.daemon(now, received, sent) == want, why


def test_simulate_a_silent_peer_keepalives_at_2_and_4_close_at_6():
    assert exercise.simulate(exercise.daemon, 0.0, 0.0, 10.0) == ([2.0, 4.0], 6.0)


def test_on_fake_time_passes_the_right_rule_and_fails_an_off_by_one():
    assert all(exercise.on_fake_time(right).values())

    facts = exercise.on_fake_time(timer(strict=True))
    assert [fact for fact, held in facts.items() if not held] == [
        "now=6.0, last_received=0.0, last_sent=4.5: 'close' (6 s of silence exactly: lost)",
        "a silent peer on a fake clock: keepalives at 2 s and 4 s, close at 6 s",
    ]


def test_a_timeline_whose_capture_began_late_anchors_on_the_first_send():
    events = [(-1.9, "r2 answers", exercise.SERVER_SAYS), (-1.3, "r1 sends", "")]
    events += [(0.7, "r1 sends", ""), (2.7, "r1 sends", "")]
    timeline = exercise.Timeline.from_events(events, 4.1)
    assert timeline == exercise.Timeline(-1.9, -1.3, [0.7, 2.7], 4.1)
    assert all(exercise.against_daemon(right, timeline).values())
    late = exercise.against_daemon(timer(close_s=7.0), timeline)
    assert not all(late.values())


def test_a_keepalive_the_client_sent_just_before_it_closed_is_a_tie_not_a_miss():
    """CI's run at load 9: the client's third keepalive went out 10 ms before its close; the
    replay's 10 ms grid puts both in one tick, where the right rule closes first."""
    timeline = exercise.Timeline(-0.58, -0.585, [1.41, 3.42, 5.41], 5.42)
    assert all(exercise.against_daemon(right, timeline).values())
    silent = exercise.against_daemon(timer(close_s=6.0, strict=True), timeline)
    assert all(silent.values())  # strict vs not: the same here, the tie is not compared
    no_keepalives = exercise.against_daemon(
        lambda now, r, s: "close" if now - r >= 6 else None, timeline
    )
    assert not no_keepalives["your keepalives fall when the client's did (within 0.3 s)"]
