"""``Queue``'s settings and errors: every wrong value fails at construction, with a clear message.

Self-contained: nothing is imported from conftest or other test modules.
"""

from __future__ import annotations

import os
import pickle
import queue

import pytest

import turbo_queue
from turbo_queue import Queue


@pytest.mark.parametrize("setting, value", [
    ("ack_every", 0), ("ack_every", -1), ("ack_every", 1.5), ("ack_every", True),
    ("recover_every", 0), ("recover_every", "30"), ("max_crashes", 0), ("max_ready_files", 0),
    ("batch_size", 0), ("max_batch_delay", -1), ("chunk_size", 0), ("codec", "yaml"),
])
def test_a_bad_number_fails_at_construction_naming_the_setting(tmp_path, setting, value):
    with pytest.raises(ValueError, match=setting):
        Queue(path=tmp_path / "q", **{setting: value})


@pytest.mark.parametrize("setting", ["durable", "allow_network_fs"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_flag_must_be_a_bool(tmp_path, setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be True or False"):
        Queue(path=tmp_path / "q", **{setting: value})


def test_nothing_is_created_for_a_refused_setting(tmp_path):
    with pytest.raises(ValueError):
        Queue(path=tmp_path / "q", ack_every=0)
    assert not (tmp_path / "q").exists()


def test_every_setting_the_readme_lists_for_queue_is_accepted_and_passed_on(tmp_path):
    q = Queue(path=tmp_path / "q", max_ready_files=3, recover_every=5, max_crashes=2, ack_every=10)
    q.put(1)
    assert q.get(timeout=10) == 1
    assert q._enqueuer is not None and q._enqueuer.max_ready_files == 3
    assert q._dequeuer is not None
    assert (q._dequeuer.recover_every, q._dequeuer.max_crashes, q._dequeuer.ack_every) == (5.0, 2, 10)
    copy = pickle.loads(pickle.dumps(q))
    copy.put(2)
    assert copy.get(timeout=10) == 2
    assert copy._dequeuer is not None and copy._dequeuer.max_crashes == 2
    assert copy._enqueuer is not None and copy._enqueuer.max_ready_files == 3
    copy.close()
    q.close()


def test_a_folder_it_cannot_write_says_so_and_what_to_do(tmp_path, monkeypatch):
    # What the kernel answers for a folder this user may not write (asked through os.access, so
    # that the test means the same as root, who may write anything).
    folder = tmp_path / "q"
    folder.mkdir()
    original = os.access

    def no_write(path, mode, **kwargs):
        if os.fspath(path) == str(folder) and mode & os.W_OK:
            return False
        return original(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", no_write)
    with pytest.raises(PermissionError, match="a Queue cannot create or rename files in the queue folder"):
        Queue(path=folder)
    assert os.listdir(folder) == []  # refused before anything was made in it


def test_a_path_that_is_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "events"
    path.write_text("not a queue")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        Queue(path=path)


def test_a_path_below_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "events"
    path.write_text("not a queue")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        Queue(path=path / "q")


def test_create_false_refuses_a_missing_queue_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "events"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Queue(path=missing, create=False)
    assert not (tmp_path / "typo").exists()


def test_create_false_opens_a_queue_that_exists(tmp_path):
    with Queue(path=tmp_path / "q") as first:
        first.put("x")
    with Queue(path=tmp_path / "q", create=False) as second:
        assert second.get(timeout=10) == "x"


def test_create_false_needs_a_path():
    with pytest.raises(ValueError, match="create=False"):
        Queue(create=False)


@pytest.mark.parametrize("timeout", [-1, -0.5])
def test_a_non_blocking_get_ignores_the_timeout_as_queue_queue_does(timeout):
    q = Queue()
    with pytest.raises(queue.Empty):
        q.get(False, timeout)
    with pytest.raises(queue.Empty):
        q.get_many(5, False, timeout)
    q.close()


def test_a_blocking_get_with_a_negative_timeout_is_refused():
    q = Queue()
    with pytest.raises(ValueError, match="non-negative"):
        q.get(True, -1)
    q.close()


def test_simple_queue_takes_the_same_settings(tmp_path):
    with pytest.raises(ValueError, match="ack_every"):
        turbo_queue.SimpleQueue(path=tmp_path / "q", ack_every=0)
