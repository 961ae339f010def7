"""``set_aside()``: items that cannot be delivered kept in a ``bad_`` batch with the reason."""

from __future__ import annotations

import os
import sqlite3

import pytest

from turbo_queue import Dequeuer, recover, set_aside
from turbo_queue import _batchfile
from turbo_queue.monitor import read_items

from .support import listing


def test_items_are_kept_in_a_bad_batch_with_the_reason_and_can_be_delivered_again(folder):
    items = [{"n": i} for i in range(250)]  # more than one chunk
    name = set_aside(folder, items, "the broker refused them: too large")
    assert listing(folder)["bad"] == [name] and os.listdir(folder) == [name]
    meta, kept = read_items(os.path.join(folder, name), 1000)
    assert kept == items
    assert meta["reason"] == "the broker refused them: too large" and meta["count"] == 250
    assert meta["codec"] == "pickle" and meta["acked"] == 0

    os.rename(os.path.join(folder, name), os.path.join(folder, name.replace("bad_", "ready_", 1)))
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(1000, timeout=10) == items


@pytest.mark.parametrize("codec, items", [("raw", [b"\x00bytes", "text"]), ("json", [[1, "a"], {"k": None}])])
def test_any_codec(folder, codec, items):
    name = set_aside(folder, items, "why", codec=codec, durable=True)
    meta, kept = read_items(os.path.join(folder, name), 10)
    assert meta["codec"] == codec and kept == items


def test_bad_arguments_write_nothing(folder):
    with pytest.raises(TypeError, match="raw codec"):
        set_aside(folder, [b"ok", 3], "why", codec="raw")
    with pytest.raises(ValueError, match="unknown codec"):
        set_aside(folder, [b"ok"], "why", codec="yaml")
    with pytest.raises(ValueError, match="at least one item"):
        set_aside(folder, [], "why")
    with pytest.raises(ValueError, match="needs a reason"):
        set_aside(folder, [1], " ")
    assert os.listdir(folder) == []


def test_a_failed_write_leaves_no_bad_file(folder, monkeypatch):
    def fail(self, n, data, crc=None):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(_batchfile.BatchWriter, "append", fail)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        set_aside(folder, list(range(10)), "why")
    assert listing(folder)["bad"] == [] and listing(folder)["ready"] == []
    recover(folder)  # the loading_ orphan holds nothing
    assert os.listdir(folder) == []
