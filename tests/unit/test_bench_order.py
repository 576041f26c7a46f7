"""``bench.round_order``: each round of the bench starts one case later, so that each case runs
at another place in each round (the order effect of ``docs/performance.md``, *A stream of
single packets*)."""

from __future__ import annotations

from vpnlab.course.bench import round_order

CASES = ["routed", "openvpn", "vpnlab esp-aes-gcm simple", "vpnlab esp-aes-gcm fast"]


def test_each_round_starts_one_case_later_and_runs_every_case_once():
    rounds = [round_order(CASES, r) for r in range(5)]
    assert [r[0] for r in rounds] == [*CASES, CASES[0]]
    assert all(sorted(r) == sorted(CASES) for r in rounds)
    assert rounds[0] == CASES  # a bench of one round runs them as given


def test_each_case_runs_at_another_place_in_each_round():
    rounds = [round_order(CASES, r) for r in range(len(CASES))]
    for case in CASES:
        assert sorted(r.index(case) for r in rounds) == list(range(len(CASES)))


def test_no_cases_no_rounds_to_turn():
    assert round_order([], 2) == []
