"""MQTT 3.1.1 packets: the bytes the spec gives, a stream cut anywhere, and what a client refuses."""

from __future__ import annotations

import pytest

from swarm.runtime import mqttwire as wire
from swarm.runtime.mqttwire import Ack, ConnAck, PacketReader, PingResp, Publish, WireError


def test_connect_carries_the_will_and_the_login_in_the_order_of_the_spec() -> None:
    packet = wire.connect(
        "n1", clean_session=False, keepalive=30, username="u", password="p", will=wire.Will("t", b"gone")
    )
    body = b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04,)) + b"\x00\x1e"
    body += b"\x00\x02n1" + b"\x00\x01t" + b"\x00\x04gone" + b"\x00\x01u" + b"\x00\x01p"
    assert packet == b"\x10" + bytes((len(body),)) + body


def test_connect_without_login_or_will_sets_only_clean_session() -> None:
    packet = wire.connect("c", clean_session=True, keepalive=60)
    assert packet == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
    with pytest.raises(ValueError, match="user name"):
        wire.connect("c", clean_session=True, keepalive=60, password="p")


@pytest.mark.parametrize("size", [0, 127, 128, 16_383, 16_384, 2_097_152])
def test_a_publish_of_any_size_reads_back_whole(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packet = wire.publish(b"a/b", payload, qos=1, retain=True, packet_id=513)
    assert PacketReader().feed(packet) == [Publish("a/b", payload, 1, True, 513)]


def test_qos0_publish_has_no_packet_identifier() -> None:
    assert wire.publish(b"t", b"x", qos=0, retain=False) == b"\x30\x04\x00\x01tx"
    assert PacketReader().feed(b"\x30\x04\x00\x01tx") == [Publish("t", b"x", 0, False, None)]


def test_a_stream_cut_at_every_byte_gives_the_same_packets() -> None:
    stream = (
        b"\x20\x02\x01\x00"  # CONNACK, session present
        + wire.publish(b"x/y", b"z" * 300, qos=1, retain=False, packet_id=7)
        + b"\x40\x02\x00\x09"  # PUBACK 9
        + b"\x90\x04\x00\x0a\x01\x80"  # SUBACK 10: granted QoS 1, refused
        + b"\xb0\x02\x00\x0b"  # UNSUBACK 11
        + b"\xd0\x00"  # PINGRESP
    )
    expected = [
        ConnAck(True, 0),
        Publish("x/y", b"z" * 300, 1, False, 7),
        Ack(Ack.PUBACK, 9),
        Ack(Ack.SUBACK, 10, b"\x01\x80"),
        Ack(Ack.UNSUBACK, 11),
        PingResp(),
    ]
    assert PacketReader().feed(stream) == expected
    for cut in range(1, len(stream)):
        reader = PacketReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == expected
    reader = PacketReader()
    assert [p for i in range(len(stream)) for p in reader.feed(stream[i : i + 1])] == expected


def test_the_small_packets_a_client_sends() -> None:
    assert wire.puback(258) == b"\x40\x02\x01\x02"
    assert wire.subscribe(1, ["a", "b/#"]) == b"\x82\x0c\x00\x01\x00\x01a\x01\x00\x03b/#\x01"
    assert wire.unsubscribe(2, ["a"]) == b"\xa2\x05\x00\x02\x00\x01a"
    assert (wire.PINGREQ, wire.DISCONNECT) == (b"\xc0\x00", b"\xe0\x00")


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"\x34\x05\x00\x01tx\x00", "QoS 2"),  # a QoS 2 PUBLISH: this client never subscribes at 2
        (b"\x50\x02\x00\x01", "type 5"),  # PUBREC
        (b"\x10\x02\x00\x00", "type 1"),  # CONNECT: a broker never sends one
        (b"\x30\x03\x00\x05t", "shorter than its topic"),
        (b"\x30\x04\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x40\x03\x00\x01\x00", "acknowledgement"),
        (b"\x20\x01\x00", "CONNACK of 1 bytes"),
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
    ],
)
def test_what_a_client_does_not_receive_is_an_error(stream: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        PacketReader().feed(stream)


def test_a_packet_past_the_limit_is_refused_before_its_body_arrives() -> None:
    reader = PacketReader(max_packet=1000)
    with pytest.raises(WireError, match="past the limit"):
        reader.feed(b"\x30\xe9\x07")  # 1001 bytes announced


def test_the_names_of_refusals() -> None:
    assert wire.connack_reason(5) == "not authorized"
    assert wire.connack_reason(4) == "bad user name or password"
    assert "code 77" in wire.connack_reason(77)


def test_a_topic_past_the_protocol_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="65535"):
        wire.subscribe(1, ["x" * 70_000])
