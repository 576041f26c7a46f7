"""The decoders (vpnlab/instruments/decode.py): tshark's PDML and pyshark's packets as layers,
fields and the bytes each layer adds, on synthetic input and on a reference capture.
"""

from __future__ import annotations

import asyncio

import pytest

from vpnlab.instruments import capture, decode
from vpnlab.instruments.capture import CaptureError
from vpnlab.instruments.decode import Field, Layer, Packet

from .helpers import CAPTURES, needs_tshark


def test_layer_overhead_counts_headers_and_the_ESP_trailer():
    def layer(name, pos, size, *fields):
        return Layer(name, pos, size, tuple(Field(n, n, "", p, s) for n, p, s in fields))

    gcm = Packet(
        1,
        162,
        "eth:ethertype:ip:udp:udpencap:esp:ip:icmp:data",
        (
            layer("eth", 0, 14),
            layer("ip", 14, 20),
            layer("udp", 34, 8),
            layer("udpencap", 42, 0),
            layer(
                "esp",
                42,
                120,
                ("esp.spi", 42, 4),
                ("esp.iv", 50, 8),
                ("esp.encrypted_data", 58, 88),
                ("esp.decrypted_data", 0, 88),
            ),
            layer("ip", 0, 20),
            layer("icmp", 20, 64),
        ),
    )
    got = [(o.layer, o.header_bytes, o.trailer_bytes) for o in decode.layer_overhead(gcm)]
    assert got == [
        ("eth", 14, 0),
        ("ip", 20, 0),
        ("udp", 8, 0),
        ("esp", 16, 20),
        ("ip", 20, 0),
        ("icmp", 64, 0),
    ]
    plain = Packet(
        1,
        126,
        capture.EXTERNAL_STACK,
        (layer("eth", 0, 14), layer("ip", 14, 20), layer("udp", 34, 8), layer("esp", 42, 84)),
    )
    assert [o.header_bytes for o in decode.layer_overhead(plain)] == [14, 20, 8, 84]
    tun = Packet(
        1,
        65,
        "raw:ip:tcp:ftp",
        (layer("raw", 0, 65), layer("ip", 0, 20), layer("tcp", 20, 32), layer("ftp", 52, 13)),
    )
    assert [o.header_bytes + o.trailer_bytes for o in decode.layer_overhead(tun)] == [
        0,
        20,
        32,
        13,
    ]


def test_tunnel_overhead_rejects_impossible_sizes():
    assert decode.tunnel_overhead(126, 84) == 42
    for outer, inner in ((10, 84), (84, 0)):
        with pytest.raises(CaptureError):
            decode.tunnel_overhead(outer, inner)


PDML = """<?xml version="1.0"?><pdml>
<packet>
  <proto name="geninfo" pos="0" size="61"/>
  <proto name="frame" pos="0" size="61">
    <field name="frame.number" show="7" pos="0" size="0"/>
    <field name="frame.len" show="61" pos="0" size="0"/>
    <field name="frame.protocols" show="eth:ethertype:ip:udp:udpencap:esp" pos="0" size="0"/>
  </proto>
  <proto name="eth" pos="0" size="14"><field name="eth.type" showname="Type: IPv4"
     show="0x0800" pos="12" size="2"/></proto>
  <proto name="esp" pos="42" size="19">
    <field name="esp.spi" showname="ESP SPI" show="0x56504e4c" pos="42" size="4"/>
    <field name="" show="group"><field name="esp.hidden" hide="yes" show="x" pos="0" size="0"/>
      <field name="esp.nested" show="y" pos="46" size="4"/></field>
  </proto>
</packet></pdml>"""


def test_parse_pdml_keeps_stack_layers_and_field_bytes():
    [pkt] = decode.parse_pdml(PDML)
    assert (pkt.number, pkt.length, pkt.stack) == (7, 61, capture.EXTERNAL_STACK)
    assert [(x.name, x.pos, x.size) for x in pkt.layers] == [("eth", 0, 14), ("esp", 42, 19)]
    assert [f.name for f in pkt.layer("esp").fields] == ["esp.spi", "esp.nested"]
    rows = decode.layer_table([pkt])
    assert rows[1] == {
        "packet": 7,
        "layer": "esp",
        "field": "esp.spi",
        "value": "0x56504e4c",
        "pos": 42,
        "size": 4,
    }
    assert "esp.spi" in decode.format_table(rows)
    with pytest.raises(CaptureError):
        pkt.layer("ip")
    with pytest.raises(CaptureError):
        decode.parse_pdml("<pdml><packet>")


@needs_tshark
def test_pyshark_async_decoding_matches_tshark():
    path = CAPTURES / "plain-ftp-tun0.pcapng"
    packets = asyncio.run(decode.read_packets_async(path))
    assert [p.frame_info.protocols for p in packets] == capture.stacks(path)
    rows = decode.layer_table(packets)
    commands = [r for r in rows if r["field"] == "ftp.request.command"]
    assert commands and commands[0]["value"] == "USER" and commands[0]["size"] == 4
    assert len(decode.read_packets(path, limit=3)) == 3


def test_sync_pyshark_refuses_a_running_event_loop():
    async def inside_jupyter():
        decode.read_packets(CAPTURES / "plain-ping-eth0.pcapng")

    with pytest.raises(CaptureError, match="await"):
        asyncio.run(inside_jupyter())
