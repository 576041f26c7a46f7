"""Notebook 4's code exercise: the student's NAT rule (SetRouting(0)), judged by traffic.

The student writes ``nat_ruleset(network, external)``, returning an nftables ruleset (text for
``nft -f``) that masquerades traffic from the tunnel network leaving the external interface.
The server's own NAT rule is set aside (or the lab runs with ``--nat off``); the check loads the
student's ruleset in r2 and then observes:

- a who-am-I fetch from r1 through the tunnel: web must see the server, 198.51.100.2;
- a ping from r2 with a source outside the tunnel network (10.8.1.5, on r2's loopback for
  the test: inside 10.8.0.0/16 and 10.0.0.0/8, outside 10.8.0.0/24) captured on web's
  ``eth0``: it must arrive with that source unchanged, not masqueraded.

Afterwards it deletes every nftables table the student's ruleset added, and the address.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vpnlab.core.constants import TUNNEL_NETWORK
from vpnlab.course.notebook import CourseLab
from vpnlab.instruments import capture
from vpnlab.lab.nodes import exec_in

EXTERNAL = "eth0"
SERVER_PUBLIC = "198.51.100.2"
OTHER_SOURCE = "10.8.1.5"
"""A source that is not the tunnel's: a rule for 10.0.0.0/8 or 10.8.0.0/16 would take it too."""
WEB = "203.0.113.10"
Ruleset = Callable[[str, str], str]


def tables(lab: CourseLab) -> set[str]:
    """r2's nftables tables, as 'family name'."""
    out = lab.run("r2", "nft list tables", check=True).stdout
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}


def load(lab: CourseLab, ruleset: str) -> str:
    """``nft -f -`` in r2 with ``ruleset``; nft's complaint, or "" when it took it."""
    done = exec_in(
        lab.prefix,
        "r2",
        ["nft", "-f", "-"],
        input=ruleset,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()


def _source_at_web(lab: CourseLab, folder: Path) -> list[str]:
    """A ping from r2 with source OTHER_SOURCE: the sources web's eth0 saw for it."""
    lab.run("r2", ["ip", "addr", "add", f"{OTHER_SOURCE}/32", "dev", "lo"], check=True)
    try:
        with capture.start_capture(
            lab.prefix, "web", "eth0", folder / "nat-exercise-web.pcapng", 20, 8, "icmp"
        ) as cap:
            lab.run("r2", ["ping", "-c", "2", "-i", "0.3", "-W", "1", "-I", OTHER_SOURCE, WEB])
        rows = capture.fields(cap.path, ["ip.src"], display_filter="icmp.type == 8")
    finally:
        lab.run("r2", ["ip", "addr", "del", f"{OTHER_SOURCE}/32", "dev", "lo"])
    return sorted({src for (src,) in rows})


def check_nat_ruleset(
    lab: CourseLab, nat_ruleset: Ruleset, folder: Path = Path("work")
) -> dict[str, bool]:
    """The student's rule in r2, the facts observed. The server's own rule (its ``ip vpnlab``
    table), if there is one, is set aside meanwhile and loaded again from its file after."""
    server_rule: Path | None = lab.state_dir() / "r2-nat.nft"
    if "ip vpnlab" in tables(lab):
        lab.run("r2", "nft delete table ip vpnlab", check=True)
    else:
        server_rule = None
    lab.run("r2", "conntrack -F")  # forget earlier translations
    before = tables(lab)
    try:
        text = nat_ruleset(TUNNEL_NETWORK, EXTERNAL)
        complaint = load(lab, text) if isinstance(text, str) else "not a string"
    except Exception as exc:  # the student's bug: a fact of the check, not a traceback
        complaint = f"{type(exc).__name__}: {exc}"
    try:
        seen = lab.whoami("r1")
        sources = _source_at_web(lab, folder)
    finally:
        for table in tables(lab) - before:
            lab.run("r2", ["nft", "delete", "table", *table.split()])
        lab.run("r2", "conntrack -F")
        if server_rule is not None:
            lab.run("r2", ["nft", "-f", str(server_rule)], check=True)
    if complaint:
        print("your ruleset:", complaint)
    print(f"who-am-I from r1: {seen!r}; web saw r2's ping from {OTHER_SOURCE} as {sources}")
    return {
        "nft took your ruleset": not complaint,
        f"who-am-I from r1 says 'you are {SERVER_PUBLIC}' (masqueraded)": (
            seen == f"you are {SERVER_PUBLIC}"
        ),
        f"a packet from {OTHER_SOURCE}, not the tunnel's, reached web unchanged": sources
        == [OTHER_SOURCE],
    }
