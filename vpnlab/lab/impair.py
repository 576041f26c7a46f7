"""Impairments on the isp router: packet loss, delay and jitter, as a real internet path has them.

Delay and jitter (netem, or the userspace relay where the kernel has no netem) are in
``delay.py``; :func:`apply` sets all three, :func:`clear` removes all three.

The rule lives in the isp's own namespace, in an nftables table of its own, so it goes away
with ``down`` and never touches the host. ``numgen random`` needs no kernel module beyond
nftables itself (netem, the usual tool, is not on every kernel):

    table inet vpnlab_impair {
        chain forward {
            type filter hook forward priority 0; policy accept;
            iifname != "imp0" numgen random mod 1000 < 50 counter drop   # 5 %
        }
    }

(``imp0`` is the delay relay's device: a delayed packet crosses the forward hook twice and
must only risk being lost once.)
"""

from __future__ import annotations

from vpnlab.core.errors import LabError
from vpnlab.lab.delay import DEVICE as DELAY_DEVICE
from vpnlab.lab.delay import clear_delay, set_delay
from vpnlab.lab.nodes import run_in

TABLE = "vpnlab_impair"
ROUTER = "isp"


def loss_ruleset(percent: float) -> str:
    """The nftables ruleset that drops ``percent`` % of the packets the isp forwards."""
    if not 0 <= percent <= 100:
        raise LabError(f"loss must be between 0 and 100 %, not {percent}")
    per_mille = round(percent * 10)
    return (
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority 0; policy accept;\n"
        f'        iifname != "{DELAY_DEVICE}" numgen random mod 1000 < {per_mille} counter drop\n'
        "    }\n"
        "}\n"
    )


def set_loss(prefix: str, percent: float) -> None:
    """Drop ``percent`` % of everything the isp forwards, both ways (0 removes the rule)."""
    if percent == 0:
        run_in(prefix, ROUTER, ["nft", "delete", "table", "inet", TABLE])
        return
    run_in(prefix, ROUTER, ["nft", "-f", "-"], input=loss_ruleset(percent), check=True)


def apply(prefix: str, loss: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0) -> str:
    """Set loss (both ways), delay and jitter (r2 to r1) on the r1-r2 path; 0 removes each.

    Returns one line saying what is in place (and whether netem or the relay adds the delay).
    """
    set_loss(prefix, loss)
    how = set_delay(prefix, delay_ms, jitter_ms)
    parts = [f"{loss:g} % of forwarded packets dropped" if loss else "no loss"]
    if how == "none":
        parts.append("no delay")
    else:
        parts.append(f"{delay_ms:g} ms delay +- {jitter_ms:g} ms jitter ({how})")
    return "isp: " + ", ".join(parts)


def clear(prefix: str) -> None:
    """Remove every impairment (nothing to do if there is none)."""
    run_in(prefix, ROUTER, ["nft", "delete", "table", "inet", TABLE])
    clear_delay(prefix)


def dropped(prefix: str) -> int:
    """How many packets the loss rule has dropped so far (0 without a rule)."""
    listing = run_in(prefix, ROUTER, ["nft", "list", "table", "inet", TABLE]).stdout
    words = listing.split()
    return int(words[words.index("packets") + 1]) if "packets" in words else 0
