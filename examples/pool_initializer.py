"""Hand a turbo_queue.Queue to the workers of a Pool and of a ProcessPoolExecutor.

Workers get the queue once, through the initializer, and put their findings into it while the
pool maps tasks; the main process collects them. Works with every start method.
"""

import concurrent.futures
import multiprocessing
import sys

import turbo_queue

findings = None  # each worker's handle on the queue


def init_worker(queue):
    global findings
    findings = queue


def check(n):
    if n % 7 == 0:
        findings.put(f"{n} is a multiple of 7")
    return n


if __name__ == "__main__":
    method = sys.argv[1] if len(sys.argv) > 1 else "spawn"
    ctx = multiprocessing.get_context(method)
    with turbo_queue.Queue() as queue:
        pool = ctx.Pool(2, initializer=init_worker, initargs=(queue,))
        pool.map(check, range(50))
        pool.close()  # let the workers exit normally: they flush what they put
        pool.join()
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=init_worker,
                                                    initargs=(queue,)) as executor:
            list(executor.map(check, range(50, 100)))
        found = sorted(queue.get(timeout=10) for _ in range(15))
    print(f"{method}: {len(found)} findings, e.g. {found[0]!r}")
