"""What a scenario gets (:class:`Context`), and each of its runs' setup and cleanup (:class:`Run`)."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .folder import fresh_folder, remove_tree
from .processes import discard
from .tally import Result
from .witness import Witness


#: Every scenario by name: the title of its row in the table, and its function.
Scenario = Callable[["Context", Result], None]
REGISTERED: Dict[str, Tuple[str, Scenario]] = {}


def scenario(name: str, title: str) -> Callable[[Scenario], Scenario]:
    """Register a function as the scenario ``name``, shown as ``title`` in the table."""
    def register(function: Scenario) -> Scenario:
        REGISTERED[name] = (title, function)
        return function
    return register


@dataclass
class Context:
    """A scenario's work folder, its random generator, and how big a run to make."""

    root: str
    rng: random.Random
    profile: str = "medium"
    run_count: Optional[int] = None
    soak_items: Optional[int] = None
    soak_kill_every: Optional[Tuple[float, float]] = None
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def pick(self, medium, quick, long):
        return {"quick": quick, "medium": medium, "long": long}[self.profile]

    def runs(self, medium: int, quick: int, long: int) -> int:
        return self.run_count or self.pick(medium, quick, long)

    def path(self, name: str) -> str:
        """A new path in the work folder (nothing is there yet), its name ending in ``name``."""
        return os.path.join(self.root, f"{next(self._names)}-{name}")

    def each_run(self, result: Result, medium: int, quick: int, long: int, *, witness: bool = False) -> Iterator["Run"]:
        """The profile's number of runs, one :class:`Run` after the other, each cleaned up when the next begins."""
        for number in range(self.runs(medium, quick, long)):
            with self.run(result, f"run {number}", witness=witness) as run:
                run.number = number
                yield run

    @contextlib.contextmanager
    def run(self, result: Result, label: str, *, witness: bool = False, base: Optional[str] = None) -> Iterator["Run"]:
        """One run (see :class:`Run`; its folder made in ``base``, default the work folder), closed on leaving."""
        run = Run(self, result, label, witness=witness, base=base)
        try:
            yield run
        finally:
            run.close()


class Run:
    """One run of a scenario: a fresh queue folder (``folder``), reports and other folders it asks
    for, and with ``witness`` an inotify witness on the folder. On close, the witness's violations
    become failures, every file and folder of the run is removed, and the run is counted."""

    def __init__(self, ctx: Context, result: Result, label: str, *, witness: bool = False,
                 base: Optional[str] = None) -> None:
        self.ctx = ctx
        self.result = result
        self.label = label  # starts every failure of the run; a scenario may add what it chose
        self.number = 0
        self.folder = fresh_folder(base or ctx.root)
        self._folders: List[str] = [self.folder]
        self._files: List[str] = []
        self._witness: Optional[Witness] = Witness(self.folder) if witness else None

    def fail(self, message: str) -> None:
        self.result.fail(f"{self.label}: {message}")

    def report(self, name: str = "report.log") -> str:
        """A path for a child's report (or any file), removed at the end of the run."""
        path = self.ctx.path(name)
        self.remove_at_end(path)
        return path

    def remove_at_end(self, path: str) -> None:
        """Remove the file ``path`` (if a child made it) at the end of the run."""
        self._files.append(path)

    def another_folder(self) -> str:
        """One more fresh folder, removed at the end of the run."""
        path = fresh_folder(self.ctx.root)
        self._folders.append(path)
        return path

    def watch(self) -> None:
        """Start the witness now (a run whose setup breaks the rules on purpose starts it after)."""
        if self._witness is None:
            self._witness = Witness(self.folder)

    def close_witness(self) -> None:
        """Stop the witness now (if any); what it saw becomes failures of the run."""
        if self._witness is not None:
            for violation in self._witness.close():
                self.fail(violation)
            self._witness = None

    def close(self) -> None:
        self.close_witness()
        for path in self._folders:
            if os.path.lexists(path):
                remove_tree(path)
        for path in self._files:
            discard(path)
        self.result.runs += 1
