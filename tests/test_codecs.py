"""Every codec round-trips its types, one item at a time and in whole lists, and refuses clearly."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import queue
import threading

import pytest

from turbo_queue import Dequeuer, Enqueuer
from turbo_queue._codecs import CODECS, get_codec

Point = collections.namedtuple("Point", "x y")


class Custom:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Custom and other.value == self.value


PICKLE_ITEMS = [
    0, -1, 2**100, 1.5, float("inf"), True, None, "", "text ✓", b"\x00bytes", bytearray(b"ba"),
    (1, 2), [1, [2, (3,)]], {"a": 1, 2: "b"}, {1, 2}, frozenset({3}), Point(1, 2), Custom(7),
    decimal.Decimal("1.10"), fractions.Fraction(1, 3), datetime.datetime(2024, 1, 2, 3, 4, 5), {},
]
JSON_ITEMS = [0, -1, 1.5, True, None, "", "text ✓", [1, [2, 3]], {"a": {"b": [1, None]}}, {}, []]
RAW_ITEMS = [b"", b"\x00\xff", "", "text ✓", "\udcff surrogate", b"x" * 100_000]

CASES = [("pickle", PICKLE_ITEMS), ("json", JSON_ITEMS), ("raw", RAW_ITEMS), ("kafka-message", PICKLE_ITEMS)]


def roundtrip_each(codec, items):
    return codec.decode(codec.join([codec.encode(item) for item in items]))


@pytest.mark.parametrize("name,items", CASES)
def test_codec_round_trips_one_by_one_and_as_a_list(name, items):
    codec = get_codec(name)
    assert roundtrip_each(codec, items) == items
    assert codec.decode(codec.encode_many(items)) == items
    assert [type(x) for x in roundtrip_each(codec, items)] == [type(x) for x in items]


def test_pickle_keeps_shared_references_inside_an_item():
    codec = get_codec("pickle")
    shared = [1]
    (item,) = roundtrip_each(codec, [[shared, shared]])
    assert item[0] is item[1]


def test_json_turns_tuples_into_lists_and_keys_into_strings():
    codec = get_codec("json")
    assert roundtrip_each(codec, [(1, 2), {1: "a"}]) == [[1, 2], {"1": "a"}]


@pytest.mark.parametrize(
    "name,item,type_name",
    [
        ("pickle", threading.Lock(), "lock"),
        ("pickle", lambda: None, "function"),
        ("json", {1, 2}, "set"),
        ("json", object(), "object"),
        ("raw", 123, "int"),
        ("raw", {"a": 1}, "dict"),
    ],
)
def test_an_item_the_codec_cannot_take_is_refused_naming_its_type(name, item, type_name):
    codec = get_codec(name)
    with pytest.raises(TypeError, match=rf"'{type_name}'.*{name} codec"):
        codec.encode(item)
    with pytest.raises(TypeError, match=rf"'{type_name}'"):
        codec.encode_many(["fine" if name != "raw" else b"fine", item])


def test_unknown_codec_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown codec 'yaml'.*json.*pickle.*raw"):
        get_codec("yaml")


@pytest.mark.parametrize("name,items", CASES)
def test_every_codec_round_trips_through_a_queue_folder(folder, name, items):
    with Enqueuer(folder, codec=name, chunk_size=3) as enqueuer:
        for item in items:
            enqueuer.put(item)
        enqueuer.put_many(items)
    with Dequeuer(folder) as dequeuer:
        got = [dequeuer.get(timeout=5) for _ in range(2 * len(items))]
    assert got == items + items


@pytest.mark.parametrize("name", sorted(CODECS))
def test_put_refuses_at_once_and_keeps_the_queue_usable(folder, name):
    good = b"ok" if name == "raw" else "ok"
    with Enqueuer(folder, codec=name) as enqueuer:
        enqueuer.put(good)
        with pytest.raises(TypeError, match="cannot encode an item of type"):
            enqueuer.put(threading.Lock())
        with pytest.raises(TypeError, match="'lock'"):
            enqueuer.put_many([good, threading.Lock(), good])  # all or nothing
        enqueuer.put(good)
    with Dequeuer(folder) as dequeuer:  # one batch, or two if the timer rolled between the puts
        assert [dequeuer.get(timeout=5), dequeuer.get(timeout=5)] == [good, good]
        with pytest.raises(queue.Empty):
            dequeuer.get(timeout=0.05)


def test_kafka_message_codec_gives_back_messages_to_a_plain_dequeuer(tmp_path):
    from turbo_queue.kafka import Message

    codec = get_codec("kafka-message")
    messages = [Message(b'{"id": %d}' % i, str(i).encode(), [("h", b"v"), ("n", None)], 1_700_000_000_000 + i,
                        "events", i % 4, i) for i in range(5)]
    mixed = [messages[0], b"plain", (1, 2), Message("text")]
    for items in (messages, mixed, [Message(None)]):
        back = codec.decode(codec.encode_many(items))
        assert back == items
        assert [type(x) for x in back] == [type(x) for x in items]
    with Enqueuer(str(tmp_path), codec="kafka-message") as enqueuer:
        enqueuer.put_many(messages)
        enqueuer.put(messages[1])
    got = Dequeuer(str(tmp_path)).get_many(10, timeout=5)
    assert got == messages + [messages[1]]
    assert all(type(x) is Message for x in got)
    assert got[2].headers == [("h", b"v"), ("n", None)] and got[3].offset == 3


def test_kafka_message_codec_refuses_an_unpicklable_message_by_its_type():
    from turbo_queue.kafka import Message

    with pytest.raises(TypeError, match="lock"):
        get_codec("kafka-message").encode_many([Message(b"ok"), Message(threading.Lock())])


def test_a_kafka_message_chunk_is_not_taken_for_a_pickle_one():
    # salvage guesses the codec of a file whose meta is lost by decoding its first chunk
    from turbo_queue.kafka import Message

    data = get_codec("kafka-message").encode_many([Message(b"v")])
    with pytest.raises(ValueError, match="kafka-message"):
        get_codec("pickle").decode(data)
    assert get_codec("kafka-message").decode(data) == [Message(b"v")]
