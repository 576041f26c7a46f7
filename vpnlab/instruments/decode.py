"""The captures, decoded: every layer and field with its bytes, overhead per layer, pyshark.

``decode`` runs tshark in a subprocess (PDML, so every layer and field comes with its byte
offset and size) and works anywhere, Jupyter included; ``layer_table`` turns packets into rows
a notebook can print or plot; ``layer_overhead`` says what each encapsulation layer costs.
pyshark (:func:`read_packets_async`) is ``async`` because its synchronous API fails inside
Jupyter's running event loop (pyshark issues 360, 542). ESP decrypts with ``keys`` (esp_sa
rows, see ``capture.load_keys``).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpnlab.instruments.capture import CaptureError, Keys, run_tshark, tshark_options

META_PROTOS = {"geninfo", "frame", "fake-field-wrapper"}


# --- decoding: layers and fields with their bytes -----------------------------------------------


@dataclass(frozen=True)
class Field:
    """One decoded field: its name, what Wireshark shows, its bytes' position and size."""

    name: str
    showname: str
    value: str
    pos: int
    size: int


@dataclass(frozen=True)
class Layer:
    """One protocol layer: where its bytes are, and its fields (nested ones flattened)."""

    name: str
    pos: int
    size: int
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True)
class Packet:
    """One decoded packet: number, length, ``frame.protocols`` stack and layers."""

    number: int
    length: int
    stack: str
    layers: tuple[Layer, ...] = ()

    def layer(self, name: str, index: int = 0) -> Layer:
        """The ``index``-th layer called ``name`` (a decrypted ESP packet has two ``ip``)."""
        found = [layer for layer in self.layers if layer.name == name]
        if len(found) <= index:
            raise CaptureError(f"packet {self.number} has no {name} layer #{index}")
        return found[index]


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _fields(element: ET.Element) -> list[Field]:
    out = []
    for child in element.findall("field"):
        name = child.get("name", "")
        if name and child.get("hide") != "yes":
            out.append(
                Field(
                    name,
                    child.get("showname", name),
                    child.get("show", ""),
                    _int(child.get("pos")),
                    _int(child.get("size")),
                )
            )
        out.extend(_fields(child))
    return out


def parse_pdml(text: str) -> list[Packet]:
    """Packets from tshark's ``-T pdml`` output (pure: no tshark needed)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CaptureError(f"unreadable PDML: {exc}") from None
    packets = []
    for pkt in root.iter("packet"):
        frame: dict[str, str] = {}
        layers = []
        for proto in pkt.findall("proto"):
            name = proto.get("name", "")
            if name == "frame":
                frame = {f.name: f.value for f in _fields(proto)}
            elif name not in META_PROTOS:
                layers.append(
                    Layer(
                        name, _int(proto.get("pos")), _int(proto.get("size")), tuple(_fields(proto))
                    )
                )
        packets.append(
            Packet(
                _int(frame.get("frame.number")),
                _int(frame.get("frame.len")),
                frame.get("frame.protocols", ""),
                tuple(layers),
            )
        )
    return packets


def decode(
    path: str | Path,
    keys: Keys = None,
    display_filter: str | None = None,
    count: int | None = None,
    dissector: bool = False,
) -> list[Packet]:
    """The captures, decoded: every packet's stack, layers and fields (``tshark -T pdml``);
    ``dissector`` loads ours (``capture.DISSECTOR``): a Hello is ``vpnlab``, not ``isakmp``."""
    args = ["-T", "pdml"] + (["-Y", display_filter] if display_filter else [])
    args += ["-c", str(count)] if count else []
    return parse_pdml(run_tshark(path, args, keys, dissector))


def layer_table(packets: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per field: packet, layer, field, value, pos, size (records for a DataFrame).

    Takes :class:`Packet` (from :func:`decode`) or pyshark packets (from
    :func:`read_packets_async` in its default XML mode, whose fields keep pos and size).
    Positions inside a decrypted ESP payload count from the start of the decrypted bytes.
    """
    rows = []
    for i, pkt in enumerate(packets, 1):
        layers: list[tuple[str, Sequence[Field]]]
        if isinstance(pkt, Packet):
            number, layers = pkt.number, [(layer.name, layer.fields) for layer in pkt.layers]
        else:
            number = _int(getattr(pkt, "number", i))
            layers = [(layer.layer_name, _pyshark_fields(layer)) for layer in pkt.layers]
        rows += [
            {
                "packet": number,
                "layer": name,
                "field": f.name,
                "value": f.value,
                "pos": f.pos,
                "size": f.size,
            }
            for name, layer_fields in layers
            for f in layer_fields
        ]
    return rows


def _pyshark_fields(layer: Any) -> list[Field]:
    out = []
    for name in layer.field_names:
        container = layer.get_field(name)
        for f in getattr(container, "all_fields", [container]):
            if getattr(f, "name", "") and getattr(f, "hide", None) != "yes":
                out.append(
                    Field(
                        f.name,
                        f.showname or f.name,
                        f.show or f.raw_value or "",
                        _int(f.pos),
                        _int(f.size),
                    )
                )
    return out


def format_table(rows: Sequence[dict[str, Any]], limit: int | None = None) -> str:
    """:func:`layer_table` rows as fixed-width text."""
    lines = [f"{'pkt':>4} {'layer':<9} {'pos':>4} {'size':>4}  {'field':<28} value"]
    for row in rows[:limit]:
        value = str(row["value"])
        value = value if len(value) <= 48 else value[:45] + "..."
        lines.append(
            f"{row['packet']:>4} {row['layer']:<9} {row['pos']:>4} {row['size']:>4}  "
            f"{row['field']:<28} {value}"
        )
    return "\n".join(lines)


# --- overhead -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    """Bytes one layer adds around what it carries: header before it, trailer after it."""

    layer: str
    header_bytes: int
    trailer_bytes: int


def layer_overhead(packet: Packet) -> list[Overhead]:
    """The captures: each layer's header and trailer bytes, as tshark parsed the packet.

    A layer's header runs from its start to the next layer's start, its trailer from the end of
    the layers inside it to its own end. The last layer's bytes all count as its own (for the
    plain format that is tshark's bogus ``esp``: really the whole inner packet). Decrypted ESP
    carries its inner packet in a new buffer (positions restart at 0): there the header ends
    where the ciphertext field starts and the trailer (padding, pad length, next header, ICV)
    is the rest of what the inner packet does not fill. Zero-size labels (``udpencap``) skip.
    """
    layers = [layer for layer in packet.layers if layer.size > 0]
    out = []
    for i, layer in enumerate(layers):
        inner = layers[i + 1 :]
        if not inner:
            out.append(Overhead(layer.name, layer.size, 0))
            continue
        same = list(_same_buffer(layer.pos, inner))
        if same:
            end = max(x.pos + x.size for x in same)
            trailer = max(0, layer.pos + layer.size - end)
            out.append(Overhead(layer.name, inner[0].pos - layer.pos, trailer))
            continue
        new = list(_same_buffer(inner[0].pos, inner))
        own = layer.size - (max(x.pos + x.size for x in new) - inner[0].pos)
        mine = [f for f in layer.fields if layer.pos <= f.pos < layer.pos + layer.size]
        payload = max(mine, key=lambda f: f.size, default=None)  # the ciphertext
        header = min(own, payload.pos - layer.pos) if payload else own
        out.append(Overhead(layer.name, header, own - header))
    return out


def _same_buffer(start: int, layers: list[Layer]) -> Iterator[Layer]:
    """The leading ``layers`` whose positions do not jump back before ``start``."""
    last = start
    for layer in layers:
        if layer.pos < last:
            return
        last = layer.pos
        yield layer


def tunnel_overhead(outer_bytes: int, inner_bytes: int) -> int:
    """Bytes the tunnel adds to one inner packet: outer frame length minus inner IP length."""
    if inner_bytes <= 0 or outer_bytes < inner_bytes:
        raise CaptureError(f"outer {outer_bytes} B cannot carry an inner {inner_bytes} B packet")
    return outer_bytes - inner_bytes


# --- decoding with pyshark (async: Jupyter's loop is already running) ----------------------------


async def read_packets_async(
    path: str | Path,
    keys: Keys = None,
    display_filter: str | None = None,
    limit: int = 1000,
    use_json: bool = False,
) -> list[Any]:
    """The captures with pyshark: up to ``limit`` pyshark packets of ``path``.

    ``await`` it in a notebook. ``pkt.frame_info.protocols`` is the stack, ``pkt.layers`` the
    layers, ``pkt.esp.spi`` a field; :func:`layer_table` turns them into rows.
    """
    import pyshark

    if not Path(path).is_file():
        raise CaptureError(f"no capture file {path}")
    cap = pyshark.FileCapture(
        str(path),
        display_filter=display_filter,
        use_json=use_json,
        custom_parameters=tshark_options(keys) or None,
    )
    packets: list[Any] = []
    try:
        await cap.packets_from_tshark(packets.append, packet_count=limit, close_tshark=False)
    finally:
        await cap.close_async()
    return packets


def read_packets(
    path: str | Path, keys: Keys = None, display_filter: str | None = None, limit: int = 1000
) -> list[Any]:
    """:func:`read_packets_async` for scripts; inside Jupyter ``await`` the async one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(read_packets_async(path, keys, display_filter, limit))
    raise CaptureError(
        "an event loop is running (Jupyter?): use `await vpnlab.decode.read_packets_async(...)`"
    )
