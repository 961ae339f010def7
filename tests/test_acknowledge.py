"""Explicit acknowledgement: ``Dequeuer(auto_ack=False)``, ``ack()`` and ``nack()``.

Crashes are real: a forked child takes items, acknowledges some, writes what it was handed and
what it acknowledged to a file (one ``os.write`` per line) and is killed with SIGKILL; the parent
recovers the folder and reads back everything that is delivered again.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sqlite3
from typing import Any, List

import pytest

from turbo_queue import Dequeuer, Enqueuer, recover
from turbo_queue._platform import is_locked

from .support import listing

FORK = multiprocessing.get_context("fork")


def put_batches(folder: str, *batches: List[Any], chunk_size: int = 4) -> None:
    """Hand over each list of items as one batch, in order."""
    with Enqueuer(folder, max_batch_delay=3600, chunk_size=chunk_size) as enqueuer:
        for batch in batches:
            enqueuer.put_many(batch)
            enqueuer.flush()


def acked_of(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()[0]
    finally:
        conn.close()


def take_all(folder: str) -> List[Any]:
    """Every item a fresh consumer gets now (acknowledging each call), after a recovery."""
    recover(folder)
    out: List[Any] = []
    with Dequeuer(folder, recover_every=3600) as consumer:
        while True:
            try:
                out += consumer.get_many(1000, block=False)
            except queue.Empty:
                return out


def run_child(target: Any, *args: Any) -> int:
    proc = FORK.Process(target=target, args=args)
    proc.start()
    proc.join(60)
    assert proc.exitcode is not None, "the child did not finish"
    return proc.exitcode


def _report(fd: int, tag: str, items: List[Any]) -> None:
    os.write(fd, "".join(f"{tag} {item}\n" for item in items).encode())


def _get_ack_get_die(folder: str, out: str, plan: List[int]) -> None:
    """For each n in ``plan``: get_many(n); a 0 means ack(). Then die without acknowledging more."""
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    consumer = Dequeuer(folder, auto_ack=False, recover_every=3600)
    returned: List[Any] = []
    for n in plan:
        if n == 0:
            consumer.ack()
            _report(fd, "acked", returned)
            returned = []
        else:
            items = consumer.get_many(n, timeout=10)
            returned += items
            _report(fd, "got", items)
    os.kill(os.getpid(), signal.SIGKILL)


def reports(out: str, tag: str) -> List[int]:
    with open(out) as report:
        return [int(line.split()[1]) for line in report if line.split()[0] == tag]


# -- crashes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [
    [3, 0, 2],  # within one batch
    [100, 100, 3, 0, 100, 2],  # across batch boundaries, acknowledged mid-batch, then more unacknowledged
    [100, 0, 100, 100],  # a whole batch acknowledged, two finished batches not
])
def test_a_crash_delivers_again_exactly_what_was_not_acknowledged(folder, tmp_path, plan):
    items = list(range(40))
    put_batches(folder, items[:10], items[10:20], items[20:30], items[30:])
    out = str(tmp_path / "out")
    assert run_child(_get_ack_get_die, folder, out, plan) == -signal.SIGKILL
    acked, got = reports(out, "acked"), reports(out, "got")
    assert acked == got[:len(acked)] and len(got) > len(acked)  # the plan did what it says

    again = take_all(folder)

    assert not set(again) & set(acked), "an acknowledged item was delivered again"
    assert sorted(again) == sorted(set(items) - set(acked)), "an unacknowledged item was lost"
    assert all(names == [] for names in listing(folder).values())  # no batch, no journal, nothing else


def test_ack_records_the_position_in_the_file_at_once(folder):
    put_batches(folder, list(range(10)))
    with Dequeuer(folder, auto_ack=False) as consumer:
        assert consumer.get_many(4) == [0, 1, 2, 3]
        (chosen,) = listing(folder)["chosen"]
        path = os.path.join(folder, chosen)
        assert acked_of(path) == 0 and consumer.unacknowledged == 4
        consumer.ack()
        assert acked_of(path) == 4 and consumer.unacknowledged == 0
        assert consumer.get_many(3) == [4, 5, 6]
        assert consumer.get_many(1) == [7]  # asking for more acknowledges nothing
        assert acked_of(path) == 4 and consumer.unacknowledged == 4


def test_get_many_across_batches_then_one_ack_deletes_every_finished_batch(folder):
    put_batches(folder, [1, 2, 3], [4, 5], [6, 7, 8, 9])
    with Dequeuer(folder, auto_ack=False) as consumer:
        got = consumer.get_many(100) + consumer.get_many(100) + consumer.get_many(2)
        assert got == [1, 2, 3, 4, 5, 6, 7]
        chosen = listing(folder)["chosen"]
        assert len(chosen) == 3 and listing(folder)["ready"] == []  # kept claimed until acknowledged
        assert all(is_locked(os.path.join(folder, name)) for name in chosen)
        assert consumer.unacknowledged == 7
        consumer.ack()
        (last,) = listing(folder)["chosen"]  # the two finished ones are deleted
        assert last in chosen
        assert acked_of(os.path.join(folder, last)) == 2
        assert consumer.get_many(100) == [8, 9]
        consumer.ack()  # every item of the last batch returned and acknowledged: it goes too
        assert os.listdir(folder) == []


def test_nack_hands_back_to_another_consumer(folder):
    put_batches(folder, list(range(5)), list(range(5, 10)))
    first = Dequeuer(folder, auto_ack=False)
    try:
        assert first.get_many(2) == [0, 1]
        first.ack()
        assert first.get_many(100) == [2, 3, 4]
        assert first.get_many(1) == [5]
        first.nack()
        assert first.unacknowledged == 0
        assert sorted(listing(folder)["ready"]) and listing(folder)["chosen"] == []
        with Dequeuer(folder, auto_ack=False) as second:
            # both batches were handed back at once: either may come first
            assert sorted(second.get_many(100) + second.get_many(100)) == [2, 3, 4, 5, 6, 7, 8, 9]
            second.ack()
        assert os.listdir(folder) == []
    finally:
        first.close()


def test_nack_then_get_delivers_the_same_items_again_to_this_consumer(folder):
    put_batches(folder, list(range(6)))
    with Dequeuer(folder, auto_ack=False) as consumer:
        assert consumer.get_many(2) == [0, 1]
        consumer.ack()
        assert consumer.get_many(3) == [2, 3, 4]
        consumer.nack()
        assert consumer.get_many(100) == [2, 3, 4, 5]
        consumer.ack()
    assert os.listdir(folder) == []


def test_nack_with_nothing_unacknowledged_keeps_the_batch(folder):
    put_batches(folder, list(range(6)))
    with Dequeuer(folder, auto_ack=False) as consumer:
        assert consumer.get_many(2) == [0, 1]
        consumer.ack()
        consumer.nack()
        assert len(listing(folder)["chosen"]) == 1
        assert consumer.get_many(100) == [2, 3, 4, 5]


def test_close_hands_back_what_was_not_acknowledged(folder):
    put_batches(folder, list(range(5)), list(range(5, 10)), list(range(10, 15)))
    consumer = Dequeuer(folder, auto_ack=False)
    assert consumer.get_many(100) == [0, 1, 2, 3, 4]
    consumer.ack()
    assert consumer.get_many(100) == [5, 6, 7, 8, 9]
    assert consumer.get_many(2) == [10, 11]
    consumer.close()  # not an acknowledgement
    assert listing(folder)["chosen"] == [] and len(listing(folder)["ready"]) == 2
    assert sorted(take_all(folder)) == list(range(5, 15))


def _get_and_exit(folder: str) -> None:
    consumer = Dequeuer(folder, auto_ack=False)
    consumer.get_many(3, timeout=10)
    # no close(): normal exit of a multiprocessing child hands back the unacknowledged items


def test_normal_exit_hands_back_what_was_not_acknowledged(folder):
    put_batches(folder, list(range(5)))
    assert run_child(_get_and_exit, folder) == 0
    (ready,) = listing(folder)["ready"]
    assert acked_of(os.path.join(folder, ready)) == 0
    assert take_all(folder) == list(range(5))


def test_ack_and_nack_refuse_in_auto_mode_and_when_closed(folder):
    with Dequeuer(folder) as auto:
        with pytest.raises(ValueError, match="auto_ack=False"):
            auto.ack()
        with pytest.raises(ValueError, match="auto_ack=False"):
            auto.nack()
        assert auto.unacknowledged == 0
    explicit = Dequeuer(folder, auto_ack=False)
    explicit.close()
    for call in (explicit.ack, explicit.nack):
        with pytest.raises(ValueError, match="is closed"):
            call()
    with pytest.raises(ValueError, match="auto_ack must be True or False"):
        Dequeuer(folder, auto_ack="no")  # type: ignore[arg-type]


def test_a_pickled_dequeuer_keeps_auto_ack(folder):
    with Dequeuer(folder, auto_ack=False) as consumer:
        with pickle.loads(pickle.dumps(consumer)) as copy:
            assert copy.auto_ack is False


def test_auto_mode_acknowledges_at_the_next_call_as_before(folder):
    put_batches(folder, list(range(6)))
    with Dequeuer(folder, ack_every=1) as consumer:
        assert consumer.get_many(2) == [0, 1]
        (chosen,) = listing(folder)["chosen"]
        assert consumer.get_many(2) == [2, 3]  # read from items in hand: nothing recorded yet
        consumer.close()
    assert acked_of(os.path.join(folder, listing(folder)["ready"][0])) == 4


# -- with setting aside and careful reading ---------------------------------------------------


def flip_inside(path: str, marker: bytes) -> None:
    data = bytearray(open(path, "rb").read())
    data[data.index(marker)] ^= 0x01
    with open(path, "r+b") as f:
        f.write(data)


def _get_past_damage_and_die(folder: str, out: str, ack_first: int) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    consumer = Dequeuer(folder, auto_ack=False, recover_every=3600)
    if ack_first:
        _report(fd, "acked", consumer.get_many(ack_first, timeout=10))
        consumer.ack()
    while True:  # up to the damaged chunk, past it, and to the end, acknowledging nothing more
        try:
            _report(fd, "got", consumer.get_many(100, timeout=0.5))
        except queue.Empty:
            break
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("ack_first", [0, 3, 8])
def test_setting_a_chunk_aside_never_acknowledges_what_was_not(folder, tmp_path, ack_first):
    # Items 8..11 (the third chunk) are damaged. Whether every item before the chunk was
    # acknowledged (8) or not (0, 3), a crash then loses nothing: at worst the chunk is set aside twice.
    items = [f"item-{i:03d}" for i in range(20)]
    with Enqueuer(folder, max_batch_delay=3600, chunk_size=4, codec="raw") as enqueuer:
        enqueuer.put_many(items)
    (name,) = listing(folder)["ready"]
    flip_inside(os.path.join(folder, name), b"item-009")
    out = str(tmp_path / "out")
    assert run_child(_get_past_damage_and_die, folder, out, ack_first) == -signal.SIGKILL
    with open(out) as report:
        lines = [line.split() for line in report]
    acked = [item for tag, item in lines if tag == "acked"]
    got = [item for tag, item in lines if tag == "got"]
    assert acked + got == items[:8] + items[12:]  # the damaged chunk was never delivered

    again = take_all(folder)

    assert not set(again) & set(acked)
    assert sorted(again) == sorted(set(items[:8] + items[12:]) - set(acked))
    bad = listing(folder)["bad"]
    assert len(bad) == (1 if ack_first == 8 else 2)  # a second bad_ file only when it was not settled
    assert listing(folder)["chosen"] == [] and listing(folder)["ready"] == []


def _die_holding(folder: str) -> None:
    Dequeuer(folder, auto_ack=False, recover_every=3600).get_many(6, timeout=10)
    os.kill(os.getpid(), signal.SIGKILL)


def test_careful_reading_records_only_what_ack_says(folder):
    # After one crash the batch is read carefully: in auto mode every call records the position;
    # with auto_ack=False only ack() may, or a second crash would lose what was returned.
    put_batches(folder, list(range(12)))
    assert run_child(_die_holding, folder) == -signal.SIGKILL
    recover(folder)
    assert run_child(_die_holding, folder) == -signal.SIGKILL
    recover(folder)
    (ready,) = listing(folder)["ready"]
    assert acked_of(os.path.join(folder, ready)) == 0
    with Dequeuer(folder, auto_ack=False, recover_every=3600) as consumer:
        assert consumer.get_many(100) == [0, 1, 2, 3]  # one chunk per call
        assert consumer.get_many(100) == [4, 5, 6, 7]
        assert acked_of(os.path.join(folder, listing(folder)["chosen"][0])) == 0
        consumer.ack()
        assert acked_of(os.path.join(folder, listing(folder)["chosen"][0])) == 8
    assert take_all(folder) == [8, 9, 10, 11]


def test_after_max_crashes_at_one_item_its_chunk_is_set_aside_and_the_rest_delivered(folder):
    put_batches(folder, list(range(12)))
    for _ in range(2):
        assert run_child(_die_holding, folder) == -signal.SIGKILL
        recover(folder)
    with Dequeuer(folder, auto_ack=False, max_crashes=2, recover_every=3600) as consumer:
        got = consumer.get_many(100) + consumer.get_many(100)
        consumer.ack()
    assert got == list(range(4, 12))
    (bad,) = listing(folder)["bad"]
    assert os.listdir(folder) == [bad]
