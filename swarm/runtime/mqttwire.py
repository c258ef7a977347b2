"""MQTT 3.1.1 packets as bytes, without I/O: what the transport (`mqtt.py`) writes and reads.

Only the part of the protocol a swarm client speaks: CONNECT with a will, PUBLISH at QoS 0 and 1 both
ways, SUBSCRIBE and UNSUBSCRIBE, PINGREQ and DISCONNECT. A broker that answers with anything else
(QoS 2 handshakes, a packet a client never receives) gets a `WireError`, and the transport drops the
connection: there is no half-understood state to carry on from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DISCONNECT",
    "PINGREQ",
    "Ack",
    "ConnAck",
    "PacketReader",
    "PingResp",
    "Publish",
    "Will",
    "WireError",
    "connack_reason",
    "connect",
    "puback",
    "publish",
    "subscribe",
    "unsubscribe",
]

# Packet types (the high nibble of a packet's first byte).
_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK = 8, 9, 10, 11
_PINGRESP = 13

#: The largest remaining length the protocol can state (four length bytes).
MAX_REMAINING = 268_435_455

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

_CONNACK_REASONS = {
    1: "the broker refused the protocol version",
    2: "the broker refused the client identifier",
    3: "the broker is unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class WireError(Exception):
    """Bytes from the broker that are not MQTT 3.1.1 as a client receives it."""


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for a client whose connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class ConnAck:
    """The broker's answer to CONNECT: code 0 accepts it."""

    session_present: bool
    code: int


@dataclass(frozen=True, slots=True)
class Publish:
    """A message from the broker; `packet_id` is None at QoS 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class Ack:
    """PUBACK, SUBACK or UNSUBACK (`kind` is the packet type); `codes` are a SUBACK's return codes."""

    kind: int
    packet_id: int
    codes: bytes = b""

    PUBACK = _PUBACK
    SUBACK = _SUBACK
    UNSUBACK = _UNSUBACK


@dataclass(frozen=True, slots=True)
class PingResp:
    """The broker's answer to PINGREQ."""


Packet = ConnAck | Publish | Ack | PingResp


def connack_reason(code: int) -> str:
    """What a refusing CONNACK's return code means."""
    return _CONNACK_REASONS.get(code, f"the broker refused the connection (code {code})")


def _remaining(length: int) -> bytes:
    if length > MAX_REMAINING:
        raise ValueError(f"an MQTT packet holds at most {MAX_REMAINING} bytes, not {length}")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, not {len(data)}")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining(len(body)) + body


def connect(
    client_id: str,
    *,
    clean_session: bool,
    keepalive: int,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """CONNECT. A password needs a user name (MQTT 3.1.1 has no password alone)."""
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 sends a password only with a user name")
    flags = 0x02 if clean_session else 0
    payload = [_string(client_id)]
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += [_string(will.topic), _string(will.payload)]
    if username is not None:
        flags |= 0x80
        payload.append(_string(username))
    if password is not None:
        flags |= 0x40
        payload.append(_string(password))
    header = _string("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big")
    return _packet(_CONNECT << 4, header + b"".join(payload))


def publish(topic: bytes, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0) -> bytes:
    """PUBLISH of `payload` to the UTF-8 `topic`; `packet_id` only at QoS 1."""
    variable = len(topic).to_bytes(2, "big") + topic
    if qos:
        variable += packet_id.to_bytes(2, "big")
    first = _PUBLISH << 4 | qos << 1 | retain
    return b"".join((bytes((first,)), _remaining(len(variable) + len(payload)), variable, payload))


def puback(packet_id: int) -> bytes:
    """PUBACK of a QoS 1 message received."""
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def subscribe(packet_id: int, topics: Sequence[str], qos: int = 1) -> bytes:
    """SUBSCRIBE to every topic filter of `topics` at `qos`."""
    body = packet_id.to_bytes(2, "big") + b"".join(_string(t) + bytes((qos,)) for t in topics)
    return _packet(_SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(packet_id: int, topics: Sequence[str]) -> bytes:
    """UNSUBSCRIBE from every topic filter of `topics`."""
    return _packet(_UNSUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + b"".join(map(_string, topics)))


class PacketReader:
    """Cuts the byte stream from the broker into packets; keeps a partial packet for the next feed."""

    def __init__(self, max_packet: int = MAX_REMAINING) -> None:
        self._buffer = bytearray()
        self._max = max_packet

    def feed(self, data: bytes) -> list[Packet]:
        """The packets that `data` completes, in order.

        Raises:
            WireError: for a malformed packet, or one a client never receives; the stream cannot be
                resynchronised after it, so the reader is of no further use.
        """
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        packets: list[Packet] = []
        start = 0
        with memoryview(buffer) as view:  # released before the buffer is cut
            while size - start >= 2:
                header = _remaining_at(buffer, start + 1, size)
                if header is None:
                    break  # the length is still to come
                length, at = header
                if length > self._max:
                    raise WireError(f"a packet of {length} bytes, past the limit of {self._max}")
                end = at + length
                if end > size:
                    break
                packets.append(_decode(buffer[start], view[at:end]))
                start = end
        if start:
            del buffer[:start]
        return packets


def _remaining_at(buffer: bytearray, at: int, size: int) -> tuple[int, int] | None:
    """The remaining length that starts at `at`, and where the body starts; None if it is incomplete."""
    length = shift = 0
    while at < size:
        byte = buffer[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, at
        shift += 7
        if shift > 21:
            raise WireError("a remaining length longer than four bytes")
    return None


def _decode(first: int, body: memoryview) -> Packet:
    kind = first >> 4
    try:
        if kind == _PUBLISH:
            qos = (first >> 1) & 0x03
            if qos > 1:
                raise WireError(f"a PUBLISH at QoS {qos}; this client subscribes at QoS 1 at most")
            cut = 2 + int.from_bytes(body[:2], "big")
            topic = str(body[2:cut], "utf-8")
            packet_id = None
            if qos:
                packet_id = int.from_bytes(body[cut : cut + 2], "big")
                cut += 2
            if cut > len(body):
                raise WireError("a PUBLISH shorter than its topic")
            return Publish(topic, bytes(body[cut:]), qos, bool(first & 0x01), packet_id)
        if kind in (_PUBACK, _SUBACK, _UNSUBACK):
            if len(body) < 2 or (kind != _SUBACK and len(body) != 2):
                raise WireError(f"an acknowledgement (type {kind}) of {len(body)} bytes")
            return Ack(kind, int.from_bytes(body[:2], "big"), bytes(body[2:]))
        if kind == _CONNACK:
            if len(body) != 2:
                raise WireError(f"a CONNACK of {len(body)} bytes")
            return ConnAck(bool(body[0] & 0x01), body[1])
        if kind == _PINGRESP:
            return PingResp()
    except UnicodeDecodeError as exc:
        raise WireError(f"a topic that is not UTF-8: {exc}") from None
    raise WireError(f"a packet of type {kind}, which a client does not receive")
