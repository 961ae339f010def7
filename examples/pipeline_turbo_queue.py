"""A small pipeline: a producer, four workers, a collector. pipeline_multiprocessing.py and
pipeline_turbo_queue.py differ in one import line only."""

from multiprocessing import Process
from turbo_queue import Queue

WORKERS = 4
ITEMS = 20_000


def produce(tasks):
    for n in range(ITEMS):
        tasks.put({"n": n, "payload": "x" * 50})
    for _ in range(WORKERS):
        tasks.put(None)  # one stop signal per worker


def work(tasks, results):
    while (task := tasks.get()) is not None:
        results.put(task["n"] * task["n"])
    results.put(None)


if __name__ == "__main__":
    tasks, results = Queue(), Queue()
    processes = [Process(target=produce, args=(tasks,))]
    processes += [Process(target=work, args=(tasks, results)) for _ in range(WORKERS)]
    for p in processes:
        p.start()
    total, stopped = 0, 0
    while stopped < WORKERS:
        result = results.get()
        if result is None:
            stopped += 1
        else:
            total += result
    for p in processes:
        p.join()
    assert total == sum(n * n for n in range(ITEMS))
    print(f"sum of squares of {ITEMS} numbers: {total}")
