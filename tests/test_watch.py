"""Waking waiters: inotify (one reader thread per process), and watchdog where there is none."""

from __future__ import annotations

import os
import shutil
import time

from turbo_queue import _platform, _watch


def wait_generation(events: _watch.FolderEvents, generation: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while events.generation == generation and time.monotonic() < deadline:
        events.wait(generation, deadline - time.monotonic())
    return events.generation != generation


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


def test_a_ready_file_coming_or_going_wakes_waiters_and_other_renames_do_not(folder):
    events = _watch.events(folder)
    assert _watch.events(folder) is events and not events.polling
    touch(os.path.join(folder, "loading_1_a.db"))
    generation = events.generation
    os.rename(os.path.join(folder, "loading_1_a.db"), os.path.join(folder, "other_1_a.db"))
    assert not wait_generation(events, generation, 0.2)
    os.rename(os.path.join(folder, "other_1_a.db"), os.path.join(folder, "ready_1_a.db"))
    assert wait_generation(events, generation)
    generation = events.generation
    os.rename(os.path.join(folder, "ready_1_a.db"), os.path.join(folder, "chosen_1_a.db"))
    assert wait_generation(events, generation)


def test_a_removed_folder_is_watched_anew_when_it_comes_back(tmp_path):
    folder = str(tmp_path / "gone")
    os.mkdir(folder)
    old = _watch.events(folder)
    generation = old.generation
    shutil.rmtree(folder)
    assert wait_generation(old, generation)  # its waiters wake, then look every few ms
    assert old.polling
    os.mkdir(folder)
    new = _watch.events(folder)
    assert new is not old and not new.polling
    touch(os.path.join(folder, "x"))
    generation = new.generation
    os.rename(os.path.join(folder, "x"), os.path.join(folder, "ready_1_b.db"))
    assert wait_generation(new, generation)


def test_watchdog_wakes_waiters_where_there_is_no_inotify(folder):
    watcher = _watch._Watcher()
    handler = _watch.FolderEvents()
    watcher._watch_with_watchdog(folder, handler)
    try:
        touch(os.path.join(folder, "loading_1_c.db"))
        generation = handler.generation
        os.rename(os.path.join(folder, "loading_1_c.db"), os.path.join(folder, "ready_1_c.db"))
        assert wait_generation(handler, generation)
    finally:
        watcher._observer.stop()  # type: ignore[union-attr]
        watcher._observer.join()  # type: ignore[union-attr]
