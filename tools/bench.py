"""The side-by-side benchmark; see turbo_queue/bench.py or run with --help."""

import sys

from turbo_queue.bench import main

if __name__ == "__main__":
    sys.exit(main())
