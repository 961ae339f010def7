"""Programs run from a checkout (the benchmark, the fault hunt); tests import them as ``tools.<name>``."""
