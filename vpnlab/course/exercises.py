"""Every notebook exercise: its answer's type, a hint that does not give it away, and how it is
judged (``grading.py``): a salted hash of a fixed answer, or a measure of the live lab.

The answers themselves are only in the instructor edition's ``### BEGIN SOLUTION`` blocks;
``tests/notebooks/test_exercises.py`` checks each digest against them and each wrong answer.
"""

from __future__ import annotations

from typing import Any

from vpnlab.course.grading import Exercise


def _result(key: str, sub: tuple[str, ...] = ()) -> Any:
    """A measure: what the notebook recorded under ``key`` (``lab.record``) while it ran."""

    def measure(lab: Any) -> Any:
        value = lab.results[key]
        for part in sub:
            value = value[part]
        return value

    return measure


def _ping_growth_ms(lab: Any) -> float:
    return lab.results["ping_delayed_ms"] - lab.results["ping_base_ms"]


EXERCISES: dict[str, Exercise] = {
    "0.1": Exercise(
        int, "one namespace per node: count the lines of `ip netns list`", digest="1cdf314cbcc21efb"
    ),
    "0.3": Exercise(
        str,
        "who-am-I shows the source address the web host saw: which node has it (`ip addr`)?",
        digest="5432d193ca0fa10b",
    ),
    "1.1": Exercise(
        int,
        "the ifreq layout: name, flags, padding (struct.calcsize tells you)",
        digest="b8438025257473af",
    ),
    "1.2": Exercise(
        int, "the version is the high nibble of the packet's first byte", digest="c054714150d525c8"
    ),
    "1.3": Exercise(
        int,
        "the flag for devices that carry Ethernet frames, from linux/if_tun.h (above)",
        digest="9f899a6e504c2b45",
    ),
    "1.4": Exercise(
        int, "the proto field of the tun_pi header above, as an integer", digest="d594e026335fa802"
    ),
    "2.1": Exercise(int, "len() of the payload in the hexdump", digest="e9cdcb0019c23a59"),
    "2.2": Exercise(
        int,
        "one at once, then one every HELLO_RETRY_S while less than CONNECT_TIMEOUT_S has passed",
        digest="93dc5c6421453bc9",
    ),
    "2.3": Exercise(int, "`vpnlab client --help` lists the exit codes", digest="a1d67a1c59cd853f"),
    "2.4": Exercise(
        int, "look at the gaps between keepalives in the capture", digest="327c6e094c8d9a3b"
    ),
    "3.1": Exercise(
        str,
        "which half of the address space holds 203.0.113.10? Look at its first bit",
        digest="bbbce77cca0bec97",
    ),
    "3.2": Exercise(
        int, "a route to one single address: how many bits must match?", digest="47c4a08ea21086c1"
    ),
    "3.3": Exercise(str, "the loop above: `ip route get` showed it", digest="f8ce3de0aba6b229"),
    "3.4": Exercise(
        bool,
        "compare prefix lengths: the host route against the new default route",
        digest="df21e4dc01668a4e",
    ),
    "4.1": Exercise(
        str,
        "without the VPN the packet leaves r1 unchanged: whose address is its source?",
        digest="fe6063ae98291e1b",
    ),
    "4.2": Exercise(
        str,
        "with the VPN, masquerade rewrites the source as the packet leaves r2",
        digest="99ae9025a18bfcda",
    ),
    "4.3": Exercise(
        str,
        "the conntrack line's second src=/dst= pair is the reply direction",
        digest="75add7369415c424",
    ),
    "4.4": Exercise(
        str,
        "masquerade changes the source after the routing decision, as the packet leaves",
        digest="39eea4495b3ff290",
    ),
    "5.1": Exercise(
        int,
        "what does the plain format put in front of the inner packet? Only outer headers",
        digest="3b2fe87bae38292a",
    ),
    "5.2": Exercise(
        int,
        "add Ethernet, the outer headers and ESP's fields with AES-GCM "
        "(SPI, sequence, IV, padding, trailer, ICV)",
        digest="c5b979f8e593bd49",
    ),
    "5.3": Exercise(
        str,
        "the layers tshark lists for a packet read on tun0 (no Ethernet there)",
        digest="d3051643b8682226",
    ),
    "5.4": Exercise(
        str,
        "tshark reads the payload's first 4 bytes as the SPI: "
        "which bytes start an 84-byte IPv4 header?",
        digest="6b7a4b482b82eed0",
    ),
    "6.1": Exercise(
        int, "the daemons' liveness timeout (vpnlab/core/constants.py)", digest="1133b732ff1b9fe4"
    ),
    "6.3": Exercise(
        str, "which signal lets CleanUp run and send a Bye?", digest="797af96791ca08b4"
    ),
    "6.4": Exercise(str, "`nft list tables` in r2", digest="9ee2f3931df85706"),
    "7.1": Exercise(
        str, "the heading of the design notes' note on transports", digest="9ddb97b14a4c76b8"
    ),
    "7.3": Exercise(
        int,
        "the TCP transport frames each datagram with its length: how many bytes? (wire/framing.py)",
        digest="b681b724551ae0fc",
    ),
    "8.1": Exercise(
        str,
        "the captures show the answers entering one node and never leaving it",
        digest="fdb2b897c46a249e",
    ),
    "8.2": Exercise(int, "the ICMP type of an answer to a ping", digest="a13c655668c991b6"),
    "8.3": Exercise(str, "without NAT nothing rewrites the source", digest="a7029188e5759610"),
    "8.4": Exercise(
        str, "the route's `via`: the next hop towards the tunnel network", digest="607c24703981d97e"
    ),
    "9.1": Exercise(
        str, "`ip route` in r1: the LAN behind the other gateway", digest="fcd468649fe5f9b5"
    ),
    "9.2": Exercise(
        str, "the outer header: which gateway receives the datagrams?", digest="8d363d5c5ba70d66"
    ),
    "9.3": Exercise(
        str, "no NAT anywhere: the source is the asking host itself", digest="2ff6e037b69219cc"
    ),
    "9.4": Exercise(
        int,
        "--isolate-clients: what does the server do with client-to-client packets?",
        digest="d175171a72df00e8",
    ),
    "10.2": Exercise(
        int, "divide each gap between retransmissions by the one before", digest="6b4559decb0b3dd1"
    ),
    "10.3": Exercise(int, "the daemons' liveness timeout", digest="7d51f38f49ffa8e7"),
    "10.4": Exercise(
        str,
        "which process was frozen, and which kept its timers running?",
        digest="1cd9ba0d3700de79",
    ),
    "11.1": Exercise(
        str, "the kernel fills %d with the first free number", digest="e90d101b21a9a1a2"
    ),
    "11.2": Exercise(int, "IFNAMSIZ (16) counts the terminating NUL", digest="14f01b9d48c3fbe6"),
    "11.3": Exercise(
        int, "the high nibble of those packets' first byte", digest="5988ed2b9b834383"
    ),
    "11.4": Exercise(str, "errno.errorcode[...] of the error's errno", digest="7255cf9008a47c83"),
    "0.2": Exercise(
        str, "the lab's prefix followed by the node's name", measure=lambda lab: lab.ns("r2")
    ),
    "6.2": Exercise(
        int,
        "count r1's datagrams after 0 s in the timeline",
        measure=_result("keepalives_after_kill"),
        tolerance=1,
    ),
    "7.2": Exercise(
        int,
        "what does eth0 carry with the UDP transport? Is there any TCP there to retransmit?",
        measure=_result("captures", ("udp", "eth0")),
    ),
    "7.4": Exercise(
        int,
        "compare the two pings above: how often does one round trip cross the delayed link?",
        measure=_ping_growth_ms,
        tolerance=10,
    ),
    "10.1": Exercise(bool, "compare the checksums above", measure=_result("short_checksum_ok")),
    "12.3": Exercise(
        int,
        "the plain format adds nothing of its own: count the headers of a UDP datagram",
        digest="bc0e2a8e8fd9b269",
    ),
    "12.4": Exercise(
        bool,
        "what does the kernel do with a packet written to tun0, whoever sent it?",
        digest="1ab5b989a5e90306",
    ),
    "12.5": Exercise(
        int,
        "count what r2's socket received for your pings (Task 4)",
        measure=_result("one_way_received"),
    ),
    "13.1": Exercise(
        int, "1500, minus the outer headers, minus what plain adds", digest="1ea35781fb7765ba"
    ),
    "13.2": Exercise(
        int,
        "1500 - 28 - esp-aes-gcm's overhead with the worst-case padding (the table)",
        digest="6ca82682aca3c425",
    ),
    "13.3": Exercise(bool, "look at the bytes the big fetch received", digest="874cdad366bf9362"),
    "13.4": Exercise(int, "the bisection's result", measure=_result("largest_ping_payload")),
    "13.5": Exercise(
        int,
        "the SYN-ACK's MSS on r1's tun0, after the server's daemon clamped it",
        digest="db92ae133e334916",
    ),
    "14.1": Exercise(
        str,
        "tun0's global IPv6 address on r1 (`ip -6 addr`), without its prefix length",
        digest="d13378ad6ff282ba",
    ),
    "14.2": Exercise(
        int,
        "as for IPv4 (notebook 13), with the outer header of the family the server is reached by",
        digest="422a9dd0e326c007",
    ),
    "14.3": Exercise(
        str, "who-am-I's answer over IPv6 while NAT66 was on", digest="d0dd74e3f539c390"
    ),
    "14.4": Exercise(
        int,
        "the IANA protocol number for an IPv6 packet carried inside another",
        digest="46f319e56e07a130",
    ),
    "15.1": Exercise(
        int,
        "the value setsockopt(IPPROTO_UDP, UDP_ENCAP, ...) is given in vpnlab/xfrm.py",
        digest="377f6d769bbf835e",
    ),
    "15.2": Exercise(
        int, "one SA for each direction of one session (`ip xfrm state`)", digest="3005bebd67647f6e"
    ),
    "15.3": Exercise(
        str,
        "the counter of /proc/net/xfrm_stat that a dummy packet (next header 59) raises",
        digest="325869e2306bfb94",
    ),
    "10.5": Exercise(
        bool,
        "did the line typed during the break come back, and the next one?",
        measure=lambda lab: (
            lab.results["task6"]["late_echo"] == "typed while down\n"
            and lab.results["task6"]["after_echo"] == "after\n"
        ),
    ),
    "10.6": Exercise(str, "`ip addr` of r1's new tun0", measure=_result("task6", ("address",))),
}
