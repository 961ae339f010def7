"""Child programs more than one test module starts (with the ``children`` fixture): each prints
``holding`` once it holds its batch file, then waits on stdin."""

# A producer that holds a loading_ file: 100 items written into it, 50 more in memory.
PRODUCER = """
    import sys, turbo_queue
    enqueuer = turbo_queue.Enqueuer(sys.argv[1], max_batch_delay=3600)
    enqueuer.put_many(list(range(150)))
    print("holding", flush=True)
    sys.stdin.readline()
    enqueuer.close()
"""

# A consumer that claims the oldest batch and takes 21 items one by one: its position (20) is in
# the file, since it records it every 10 items when it reads the next chunk.
CONSUMER = """
    import sys, turbo_queue
    dequeuer = turbo_queue.Dequeuer(sys.argv[1], ack_every=10)
    for _ in range(21):
        dequeuer.get(timeout=30)
    print("holding", flush=True)
    sys.stdin.readline()
    dequeuer.close()
"""
