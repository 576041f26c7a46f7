"""Impairments on the isp router: packet loss, as a lossy internet path would have it.

The rule lives in the isp's own namespace, in an nftables table of its own, so it goes away
with ``down`` and never touches the host. ``numgen random`` needs no kernel module beyond
nftables itself (netem, the usual tool, is not on every kernel):

    table inet vpnlab_impair {
        chain forward {
            type filter hook forward priority 0; policy accept;
            numgen random mod 1000 < 50 counter drop        # 5 % of forwarded packets
        }
    }
"""

from __future__ import annotations

from ..errors import LabError
from . import build, state

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
        f"        numgen random mod 1000 < {per_mille} counter drop\n"
        "    }\n"
        "}\n"
    )


def set_loss(prefix: str, percent: float) -> None:
    """Drop ``percent`` % of everything the isp forwards, both ways (0 removes the rule)."""
    ns = state.namespace(prefix, ROUTER)
    if percent == 0:
        clear(prefix)
        return
    build.run_in(ns, ["nft", "-f", "-"], input=loss_ruleset(percent), check=True)


def clear(prefix: str) -> None:
    """Remove every impairment (nothing to do if there is none)."""
    ns = state.namespace(prefix, ROUTER)
    build.run_in(ns, ["nft", "delete", "table", "inet", TABLE])


def dropped(prefix: str) -> int:
    """How many packets the loss rule has dropped so far (0 without a rule)."""
    ns = state.namespace(prefix, ROUTER)
    listing = build.run_in(ns, ["nft", "list", "table", "inet", TABLE]).stdout
    words = listing.split()
    return int(words[words.index("packets") + 1]) if "packets" in words else 0
