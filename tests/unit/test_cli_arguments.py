"""Numbers and names on the command line (vpnlab/cli/arguments.py, the daemons' --tun and
--mtu): a port, a benchmark's count and time. Out of range is argparse's one-line usage error
(exit 2) before anything runs: no socket bound, no lab built, no benchmark started, no client
connecting before it finds it cannot make its tun0."""

from __future__ import annotations

import pytest

from vpnlab import cli


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["server", "--port", "70000"], "argument --port: 70000 is not a port: 1 to 65535"),
        (["client", "--port", "0"], "argument --port: 0 is not a port: 1 to 65535"),
        (["whoami", "--port", "http"], "argument --port: 'http' is not a port number"),
        (["client", "--mtu", "50"], "argument --mtu: must be 68 to 65535"),
        (["server", "--mtu", "65536"], "argument --mtu: must be 68 to 65535"),
        (["client", "--tun", "tun-of-the-course"], "argument --tun: interface name 'tun-of-the"),
        (["client", "--tun", "my tun"], "argument --tun: bad interface name 'my tun'"),
        (["ftp", "serve", "--root", "/", "--port", "99999"], "99999 is not a port"),
        (["grader", "serve", "--port", "-1"], "-1 is not a port"),
        (["bench", "--seconds", "-1"], "argument --seconds: must be 1 to 300"),
        (["bench", "--runs", "0"], "argument --runs: must be 1 to 20"),
        (["bench", "--runs", "x"], "argument --runs: invalid int value: 'x'"),
        (["bench", "--clients", "1001"], "argument --clients: must be 1 to 1000"),
        (["bench", "--flood", "--flood-seconds", "61"], "--flood-seconds: must be 5 to 60"),
        (["bench", "--class-hub", "201"], "argument --class-hub: must be 1 to 200"),
        (["meltdown", "--seconds", "0"], "argument --seconds: must be 1 to 60"),
        (["meltdown", "--samples", "51"], "argument --samples: must be 1 to 50"),
    ],
)
def test_a_number_out_of_range_is_a_one_line_usage_error(capsys, argv, said):
    with pytest.raises(SystemExit) as usage:
        cli.main(argv)
    err = capsys.readouterr().err
    assert usage.value.code == 2 and err.count("\n") == 1 and said in err, err


@pytest.mark.parametrize("prefix", [None, "nb-"])
def test_the_grader_judges_the_lab_that_lab_up_made(monkeypatch, prefix):
    """A student's `vpnlab lab up --fault grader` then `vpnlab grader check`, as docs/course.md
    gives them: on the one-server hub ($VPNLAB_PREFIX unset) the first made lab vpnlab- and
    the second asked the grader about nb- ("alice has no lab 'nb-' up")."""
    if prefix is None:
        monkeypatch.delenv("VPNLAB_PREFIX", raising=False)
    else:
        monkeypatch.setenv("VPNLAB_PREFIX", prefix)
    parser = cli.build_parser()
    made = parser.parse_args(["lab", "up", "--fault", "grader"]).prefix
    assert made == (prefix or "vpnlab-")
    for verb in ("check", "fault"):
        assert parser.parse_args(["grader", verb]).prefix == made
