"""The fault scenarios of ``tools/chaos.py``, one module per family.

Each scenario breaks the queue in one way, again and again, and counts per item what was lost,
duplicated or unexpected (:mod:`.tally`); each of its runs gets a fresh folder, reports and an
inotify witness from :mod:`.context`, which also cleans up after it. Families: kills at a random
moment (:mod:`.kills`) and at a system call (:mod:`.syscall_kills`), recovery (:mod:`.recovery`),
a full disk and failed writes (:mod:`.disk`), damaged and foreign files (:mod:`.files`), forks
(:mod:`.forks`), poison items (:mod:`.poison`), permissions (:mod:`.permissions`), the soak
(:mod:`.soak`) and the system call order of durable=True (:mod:`.durable`).
"""

from __future__ import annotations

import random
import tempfile
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

from . import disk, durable, files, forks, kills, permissions, poison, recovery, soak, syscall_kills
from .context import Context
from .folder import remove_tree
from .processes import CHILDREN, Unavailable
from .tally import Result

__all__ = ["CHILDREN", "SCENARIOS", "Context", "Result", "Unavailable", "run_scenario", "table"]

SCENARIOS: Dict[str, Tuple[str, Callable[[Context, Result], None]]] = {
    "producer_kill": ("1. producer SIGKILL, random moment", kills.scenario_producer_random_kill),
    "producer_syscall_kill": ("1. producer SIGKILL at a syscall (commit, roll, rename)",
                              syscall_kills.scenario_producer_syscall_kill),
    "consumer_kill": ("2. consumer SIGKILL, random moment", kills.scenario_consumer_random_kill),
    "consumer_syscall_kill": ("2. consumer SIGKILL at a syscall (claim, ack, hand-back, delete)",
                              syscall_kills.scenario_consumer_syscall_kill),
    "recovery_kill": ("3. recover() SIGKILL mid-work", recovery.scenario_recovery_kill),
    "recover_loop": ("4. recover() looping beside live processes", recovery.scenario_recover_loop),
    "transaction_kill": ("5. producer SIGKILL inside a spilled transaction", syscall_kills.scenario_transaction_kill),
    "disk_full": ("6. disk full (small tmpfs: blocks, inodes)", disk.scenario_disk_full),
    "failed_writes": ("6. failed writes injected (ENOSPC, EIO)", disk.scenario_failed_writes),
    "damaged": ("7. damaged ready_ files", files.scenario_damaged),
    "foreign": ("8. foreign entries in the folder", files.scenario_foreign),
    "fork": ("9. fork: dead parent, inherited queues, os.fork", forks.scenario_fork),
    "poison": ("10. poison items", poison.scenario_poison),
    "poison_crash": ("10. a poison item that kills its consumer", poison.scenario_poison_crash),
    "permissions": ("11. permissions: read-only, shared by a group", permissions.scenario_permissions),
    "soak": ("12. soak with random kills", soak.scenario_soak),
    "durable": ("13. durable: system call order (strace)", durable.scenario_durable),
}


def run_scenario(name: str, *, profile: str = "medium", seed: Optional[int] = None, root: Optional[str] = None,
                 runs: Optional[int] = None, soak_items: Optional[int] = None,
                 soak_kill_every: Optional[Tuple[float, float]] = None, keep: bool = False) -> Result:
    """Run one scenario and return its Result (tests call this with ``profile="quick"``)."""
    title, function = SCENARIOS[name]
    seed = random.randrange(2**32) if seed is None else seed
    result = Result(title, seed=seed)
    own_root = root is None
    root = tempfile.mkdtemp(prefix="turbo_queue-chaos-") if own_root else tempfile.mkdtemp(prefix=name + "-", dir=root)
    ctx = Context(root, random.Random(f"{seed}-{name}"), profile, runs, soak_items, soak_kill_every)
    started = time.monotonic()
    try:
        function(ctx, result)
    except Unavailable as exc:
        result.unavailable = str(exc)
    except Exception as exc:  # a scenario that breaks is a finding too: report it, go on with the others
        result.fail(f"the scenario itself failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}")
    finally:
        result.seconds = time.monotonic() - started
        if not keep:
            remove_tree(root)
    return result


def table(results: List[Result]) -> str:
    """The results as a Markdown table, a row a scenario."""
    rows = ["| scenario | runs | items | lost | duplicated | unexpected | bad files | integrity failures | result |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        verdict = ("not run: " + r.unavailable) if r.unavailable else ("ok" if r.ok else f"FAIL ({r.failure_count})")
        rows.append(f"| {r.scenario} | {r.runs:,} | {r.items:,} | {r.lost:,} | {r.duplicated:,} | {r.unexpected:,} | "
                    f"{r.bad_files:,} | {r.integrity_failures:,} | {verdict} |")
    return "\n".join(rows)
