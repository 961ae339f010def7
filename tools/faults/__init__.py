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

# each family registers its scenarios (@scenario) and child roles (@child) as it is imported
from . import disk, durable, files, forks, kills, permissions, poison, recovery, soak, syscall_kills  # noqa: F401
from .context import REGISTERED, Context
from .folder import remove_tree
from .processes import CHILDREN, Unavailable
from .tally import Result

__all__ = ["CHILDREN", "SCENARIOS", "Context", "Result", "Unavailable", "run_scenario", "table"]

#: The table's rows, in order (each scenario registers itself with @scenario beside its function).
ORDER = ("producer_kill", "producer_syscall_kill", "consumer_kill", "consumer_syscall_kill", "recovery_kill",
         "recover_loop", "transaction_kill", "disk_full", "failed_writes", "damaged", "foreign", "fork", "poison",
         "poison_crash", "permissions", "soak", "durable")
SCENARIOS: Dict[str, Tuple[str, Callable[[Context, Result], None]]] = {name: REGISTERED[name] for name in ORDER}


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
