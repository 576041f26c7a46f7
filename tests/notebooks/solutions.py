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
    "answer_5_1": "42",
    "answer_5_2": "162",
    "answer_5_3": "'raw:ip:tcp:ftp'",
    "answer_5_4": "'0x45000054'",
}
