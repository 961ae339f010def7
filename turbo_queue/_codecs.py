"""Codecs: how a chunk of items becomes bytes in a batch file, and back.

A codec encodes one item (``encode``, at ``put`` time, so a bad item is refused at once),
joins already-encoded items into a chunk (``join``), encodes a whole list in one call
(``encode_many``, the fast path of ``put_many``) and decodes a chunk back into a list.
"""

from __future__ import annotations

import functools
import json
import pickle
import struct
from abc import ABC, abstractmethod
from array import array
from typing import Any, Iterable, List, Tuple, cast

import orjson

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _refuse(codec: str, item: object, exc: BaseException, hint: str) -> TypeError:
    error = TypeError(
        f"cannot encode an item of type {type(item).__qualname__!r} with the {codec} codec "
        f"({type(exc).__name__}: {exc}); {hint}"
    )
    error.__cause__ = exc
    return error


class Codec(ABC):
    """Base of the codecs; ``name`` is what a batch file records."""

    name = ""

    @abstractmethod
    def encode(self, item: Any) -> bytes:
        """One item; TypeError naming its type if the codec cannot take it."""

    @abstractmethod
    def join(self, encoded: List[bytes]) -> bytes:
        """A chunk made of items that ``encode`` returned."""

    @abstractmethod
    def encode_many(self, items: List[Any]) -> bytes:
        """A chunk made of ``items`` in one call; TypeError naming the first refused item."""

    @abstractmethod
    def decode(self, chunk: bytes) -> List[Any]:
        """The items of a chunk, in order."""

    def find_refused(self, items: Iterable[Any]) -> TypeError:
        """The error for the first item of ``items`` this codec refuses (after encode_many failed)."""
        for item in items:
            try:
                self.encode(item)
            except TypeError as exc:
                return exc
        return TypeError(f"the {self.name} codec could not encode this list of items as a whole")


class PickleCodec(Codec):
    """Any picklable object, with pickle's semantics. Unpickling runs code: trusted producers only.

    A chunk is either a pickled list of items, or a pickled tuple of separately pickled items.
    """

    name = "pickle"

    def encode(self, item: Any) -> bytes:
        try:
            return pickle.dumps(item, _PICKLE_PROTOCOL)
        except Exception as exc:  # pickling runs the object's own __reduce__, which may raise anything
            raise _refuse(self.name, item, exc, "make it picklable, or put something that is") from exc

    def join(self, encoded: List[bytes]) -> bytes:
        return pickle.dumps(tuple(encoded), _PICKLE_PROTOCOL)

    def encode_many(self, items: List[Any]) -> bytes:
        try:
            return pickle.dumps(items, _PICKLE_PROTOCOL)
        except Exception:  # as in encode(); find_refused names the culprit
            raise self.find_refused(items) from None

    def decode(self, chunk: bytes) -> List[Any]:
        value = pickle.loads(chunk)
        if type(value) is tuple:
            loads = pickle.loads
            return [loads(data) for data in value]
        if type(value) is dict:  # so that salvage, guessing, does not take a MessageCodec chunk for this one
            raise ValueError("a chunk of the kafka-message codec, not of the pickle codec")
        return cast(List[Any], value)  # a chunk holds a list


class MessageCodec(PickleCodec):
    """Pickle, with a chunk made only of Kafka ``Message`` items stored as plain tuples.

    Pickling a named tuple costs a call into Python per item on each side (its reduction and
    its ``__new__``); plain tuples are pickled in C, and made Messages again in C when read. A
    chunk of other items, or of Messages mixed with others, is a pickle chunk as PickleCodec
    writes it, so any picklable item goes in and comes back as it was.
    """

    name = "kafka-message"

    def encode_many(self, items: List[Any]) -> bytes:
        message = _message_type()
        if items and set(map(type, items)) == {message}:
            try:
                return pickle.dumps({_MESSAGES: list(map(tuple, items))}, _PICKLE_PROTOCOL)
            except Exception:
                raise self.find_refused(items) from None
        return super().encode_many(items)

    def decode(self, chunk: bytes) -> List[Any]:
        value = pickle.loads(chunk)
        if type(value) is dict:
            return list(map(_make_message(), value[_MESSAGES]))
        if type(value) is tuple:
            loads = pickle.loads
            return [loads(data) for data in value]
        return cast(List[Any], value)


#: The key of a MessageCodec chunk's one entry: the Messages, as plain tuples.
_MESSAGES = "messages"
_message_types: List[Any] = []


def _message_type() -> Any:
    """``turbo_queue.kafka.Message``, imported on first use (the kafka package imports this module)."""
    if not _message_types:
        from .kafka.message import Message

        _message_types.extend([Message, functools.partial(tuple.__new__, Message)])
    return _message_types[0]


def _make_message() -> Any:
    """A C callable making a Message of a plain tuple of its fields, as ``Message._make`` without Python."""
    _message_type()
    return _message_types[1]


class JsonCodec(Codec):
    """JSON through orjson: fast, readable from the sqlite3 shell and from other languages.

    A chunk is a JSON array. Tuples come back as lists; dict keys that are not strings become strings.
    As JSON itself, it has no NaN or Infinity (orjson writes them as null) and ints are 64-bit.
    """

    name = "json"
    _options = orjson.OPT_NON_STR_KEYS

    def encode(self, item: Any) -> bytes:
        try:
            return orjson.dumps(item, option=self._options)
        except TypeError as exc:
            raise _refuse(self.name, item, exc, "convert it to JSON types, or use codec='pickle'") from exc

    def join(self, encoded: List[bytes]) -> bytes:
        return b"[" + b",".join(encoded) + b"]"

    def encode_many(self, items: List[Any]) -> bytes:
        try:
            return orjson.dumps(items, option=self._options)
        except TypeError:
            raise self.find_refused(items) from None

    def decode(self, chunk: bytes) -> List[Any]:
        return cast(List[Any], orjson.loads(chunk))  # a chunk holds a list


class StdlibJsonCodec(JsonCodec):
    """JSON through the standard library's ``json``: slower, but any int size, and NaN and
    Infinity kept (as JavaScript's tokens), as turbo-queue 0.5.2 stored items. The legacy API uses it.
    """

    name = "json-stdlib"

    def encode(self, item: Any) -> bytes:
        try:
            return json.dumps(item, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _refuse(self.name, item, exc, "convert it to JSON types, or use codec='pickle'") from exc

    def encode_many(self, items: List[Any]) -> bytes:
        try:
            return json.dumps(items, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError):
            raise self.find_refused(items) from None

    def decode(self, chunk: bytes) -> List[Any]:
        return cast(List[Any], json.loads(chunk))  # a chunk holds a list


class RawCodec(Codec):
    """Bytes or str, stored as they are (str as UTF-8, and given back as str). Safe for untrusted data.

    A chunk is: item count (uint32), one signed 64-bit length per item,
    then the items' bytes back to back. A str of L bytes has length -(L + 1).
    """

    name = "raw"

    def encode(self, item: Any) -> bytes:
        if type(item) is bytes:
            return b"b" + item
        if isinstance(item, str):
            return b"s" + item.encode("utf-8", "surrogatepass")
        if isinstance(item, (bytearray, memoryview)):
            return b"b" + bytes(item)
        raise TypeError(
            f"cannot encode an item of type {type(item).__qualname__!r} with the raw codec, "
            f"which takes bytes or str; encode it yourself or use codec='pickle' or 'json'"
        )

    def join(self, encoded: List[bytes]) -> bytes:
        lengths = array("q", [len(e) - 1 if e[:1] == b"b" else -len(e) for e in encoded])
        body = b"".join([memoryview(e)[1:] for e in encoded])
        return struct.pack("<I", len(encoded)) + lengths.tobytes() + body

    def encode_many(self, items: List[Any]) -> bytes:
        return self.join([self.encode(item) for item in items])

    def decode(self, chunk: bytes) -> List[Any]:
        (count,) = struct.unpack_from("<I", chunk)
        lengths = array("q")
        lengths.frombytes(chunk[4 : 4 + 8 * count])
        view = memoryview(chunk)
        pos = 4 + 8 * count
        items: List[Any] = []
        for length in lengths:
            if length >= 0:
                items.append(bytes(view[pos : pos + length]))
                pos += length
            else:
                length = -length - 1
                items.append(str(view[pos : pos + length], "utf-8", "surrogatepass"))
                pos += length
        if pos != len(chunk):
            raise ValueError(f"raw chunk holds {len(chunk)} bytes, its header names {pos}")
        return items


CODECS = {codec.name: codec for codec in (PickleCodec(), JsonCodec(), StdlibJsonCodec(), RawCodec(), MessageCodec())}

#: A chunk (one SQLite row, decoded at once by a consumer) holds at most this many bytes by
#: default, whatever its item count allows: 100 items of 1 MB would otherwise make every consumer
#: hold 100 MB, and more while it decodes them.
CHUNK_BYTES = 1 << 20


def encode_chunks(codec: Codec, items: List[Any], chunk_size: int, chunk_bytes: int) -> List[Tuple[int, bytes]]:
    """``items`` as (item count, bytes) chunks of at most ``chunk_size`` items and ``chunk_bytes``
    bytes each (or one item larger by itself); TypeError as ``encode_many``.

    Each ``chunk_size`` items are encoded together first (the common case: they fit); a chunk
    too large is split into as many parts as its size asks for, each encoded again.
    """
    chunks: List[Tuple[int, bytes]] = []
    for start in range(0, len(items), chunk_size):
        _encode_within(codec, items[start : start + chunk_size], chunk_bytes, chunks)
    return chunks


def _encode_within(codec: Codec, items: List[Any], chunk_bytes: int, chunks: List[Tuple[int, bytes]]) -> None:
    data = codec.encode_many(items)
    if len(data) <= chunk_bytes or len(items) == 1:
        chunks.append((len(items), data))
        return
    parts = min(len(items), -(-len(data) // chunk_bytes))
    step = -(-len(items) // parts)
    for start in range(0, len(items), step):
        _encode_within(codec, items[start : start + step], chunk_bytes, chunks)


def get_codec(name: str) -> Codec:
    """The codec called ``name``; ValueError naming the choices otherwise."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}") from None
