"""Reference answers to the notebooks' exercises: ``{notebook: {variable: expression}}``.

The tests put these in place of the ``...`` so that every check cell runs; an expression may
use the notebook's own variables (it is evaluated in the notebook's kernel).
"""

SOLUTIONS: dict[str, dict[str, str]] = {
    "00_setup_topology": {
        "answer_0_1": "4",
        "answer_0_2": "lab.prefix + 'r2'",
        "answer_0_3": "'r2'",
    },
}
SOLUTIONS["01_tun_device"] = {
    "answer_1_1": "40",
    "answer_1_2": "4",
    "answer_1_3": "0x0002",
    "answer_1_4": "0x0800",
}
SOLUTIONS["02_handshake_timeouts"] = {
    "answer_2_1": "15",
    "answer_2_2": "5",
    "answer_2_3": "3",
    "answer_2_4": "2",
}
SOLUTIONS["03_routing"] = {
    "answer_3_1": "'128.0.0.0/1'",
    "answer_3_2": "32",
    "answer_3_3": "'tun0'",
    "answer_3_4": "True",
}
SOLUTIONS["04_nat"] = {
    "answer_4_1": "'192.0.2.2'",
    "answer_4_2": "'198.51.100.2'",
    "answer_4_3": "'198.51.100.2'",
    "answer_4_4": "'postrouting'",
}
SOLUTIONS["06_liveness_cleanup"] = {
    "answer_6_1": "6",
    "answer_6_2": "3",
    "answer_6_3": "'SIGTERM'",
    "answer_6_4": "'vpnlab'",
}
SOLUTIONS["05_captures"] = {
    "answer_5_1": "28",
    "answer_5_2": "162",
    "answer_5_3": "'raw:ip:tcp:ftp'",
    "answer_5_4": "'0x45000054'",
}
SOLUTIONS["08_routing_without_nat"] = {
    "answer_8_1": "'isp'",
    "answer_8_2": "0",
    "answer_8_3": "'10.8.0.2'",
    "answer_8_4": "'198.51.100.2'",
}
SOLUTIONS["09_site_to_site"] = {
    "answer_9_1": "'172.16.2.0/24'",
    "answer_9_2": "'198.51.100.2'",
    "answer_9_3": "'172.16.1.10'",
    "answer_9_4": "0",
}
SOLUTIONS["10_tunnel_breaking"] = {
    "answer_10_1": "True",
    "answer_10_2": "2",
    "answer_10_3": "6",
    "answer_10_4": "'client'",
}
SOLUTIONS["07_tcp_meltdown"] = {
    "answer_7_1": "'udp'",
    "answer_7_2": "0",
    "answer_7_3": "2",
    "answer_7_4": "round(delayed_ms - base_ms)",
}
SOLUTIONS["11_tun_in_depth"] = {
    "answer_11_1": "'smith1'",
    "answer_11_2": "15",
    "answer_11_3": "6",
    "answer_11_4": "'EINVAL'",
}
SOLUTIONS["14_ipv6"] = {
    "answer_14_1": "'fd10:8::2'",
    "answer_14_2": "1415",
    "answer_14_3": "'2001:db8:2::2'",
    "answer_14_4": "41",
}
