"""Waking waiters: inotify (one reader thread per process), and watchdog where there is none."""

from __future__ import annotations

import os
import shutil
import time

from turbo_queue import _platform, _watch


def wait_change(events: _watch.FolderEvents, seen: int, seconds: float = 5.0, arrivals: bool = False) -> bool:
    """Whether ``changes`` (or ``arrivals``) moved on from ``seen`` within ``seconds``."""
    def counter() -> int:
        return events.arrivals if arrivals else events.changes
    deadline = time.monotonic() + seconds
    while counter() == seen and time.monotonic() < deadline:
        events.wait(seen, deadline - time.monotonic(), arrivals=arrivals)
    return counter() != seen


def touch(path: str) -> None:
    with open(path, "wb"):
        pass


def test_inotify_reports_renames_with_their_names(folder):
    inotify = _platform.Inotify(nonblocking=True)
    try:
        wd = inotify.add_watch(folder, _platform.Inotify.MOVED_FROM | _platform.Inotify.MOVED_TO)
        assert inotify.read() == []
        touch(os.path.join(folder, "loading_1_a.db"))  # a create: not asked for
        os.rename(os.path.join(folder, "loading_1_a.db"), os.path.join(folder, "ready_1_a.db"))
        events = inotify.read()
    finally:
        inotify.close()
    assert [(w, name) for w, _, name in events] == [(wd, b"loading_1_a.db"), (wd, b"ready_1_a.db")]
    assert events[0][1] & _platform.Inotify.MOVED_FROM and events[1][1] & _platform.Inotify.MOVED_TO


def test_a_ready_file_coming_wakes_waiters_and_other_renames_do_not(folder):
    events = _watch.events(folder)
    assert _watch.events(folder) is events and not events.polling
    touch(os.path.join(folder, "loading_1_a.db"))
    seen = events.arrivals
    os.rename(os.path.join(folder, "loading_1_a.db"), os.path.join(folder, "other_1_a.db"))
    assert not wait_change(events, seen, 0.2, arrivals=True)
    os.rename(os.path.join(folder, "other_1_a.db"), os.path.join(folder, "ready_1_a.db"))
    assert wait_change(events, seen, arrivals=True)


def test_a_claim_wakes_only_the_waiters_of_a_folder_watched_for_departures(folder):
    events = _watch.events(folder)
    touch(os.path.join(folder, "ready_1_a.db"))
    seen = events.changes
    os.rename(os.path.join(folder, "ready_1_a.db"), os.path.join(folder, "chosen_1_a.db"))
    assert not wait_change(events, seen, 0.2)  # consumers alone: nobody waits for a ready_ file to go

    assert _watch.events(folder, departures=True) is events  # a producer waits for room: the same watch, widened
    arrivals = events.arrivals
    os.rename(os.path.join(folder, "chosen_1_a.db"), os.path.join(folder, "ready_1_a.db"))
    assert wait_change(events, arrivals, arrivals=True)
    arrivals, seen = events.arrivals, events.changes
    os.rename(os.path.join(folder, "ready_1_a.db"), os.path.join(folder, "chosen_1_a.db"))
    assert wait_change(events, seen)
    assert events.arrivals == arrivals  # a departure is no arrival: a waiting consumer sleeps on


def test_events_wait_in_the_kernel_while_nobody_waits_and_a_waiter_counts_them_first(folder):
    watcher = _watch._Watcher()  # a process of its own, as far as watching goes
    events = watcher.events(folder)
    for i in range(10):
        touch(os.path.join(folder, f"x{i}"))
        os.rename(os.path.join(folder, f"x{i}"), os.path.join(folder, f"ready_1_{i}.db"))
    time.sleep(0.2)
    assert events.arrivals == 0  # a busy process: its reader thread was not woken by the renames
    seen = events.mark(arrivals=True)  # what a consumer does before it looks at the folder
    assert seen != 0  # they are counted before the look that sees their files
    assert not wait_change(events, seen, 0.2, arrivals=True)  # and do not wake it after that look
    touch(os.path.join(folder, "y"))
    os.rename(os.path.join(folder, "y"), os.path.join(folder, "ready_1_y.db"))
    assert wait_change(events, seen, arrivals=True)  # while it waits, an arrival wakes it


def test_a_removed_folder_is_watched_anew_when_it_comes_back(tmp_path):
    folder = str(tmp_path / "gone")
    os.mkdir(folder)
    old = _watch.events(folder)
    generation = old.changes
    shutil.rmtree(folder)
    assert wait_change(old, generation)  # its waiters wake, then look every few ms
    assert old.polling
    os.mkdir(folder)
    new = _watch.events(folder)
    assert new is not old and not new.polling
    touch(os.path.join(folder, "x"))
    generation = new.changes
    os.rename(os.path.join(folder, "x"), os.path.join(folder, "ready_1_b.db"))
    assert wait_change(new, generation)


def test_watchdog_wakes_waiters_where_there_is_no_inotify(folder):
    watcher = _watch._Watcher()
    handler = _watch.FolderEvents()
    watcher._watch_with_watchdog(folder, handler)
    try:
        touch(os.path.join(folder, "loading_1_c.db"))
        generation = handler.changes
        os.rename(os.path.join(folder, "loading_1_c.db"), os.path.join(folder, "ready_1_c.db"))
        assert wait_change(handler, generation)
    finally:
        watcher._observer.stop()  # type: ignore[union-attr]
        watcher._observer.join()  # type: ignore[union-attr]
