"""Settings of the throughput benchmarks, read from the environment (see conftest.py)."""
from __future__ import annotations

import os

DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
MAX_ROWS = int(os.environ.get("BENCH_MAX_ROWS", "256000"))
TINY_BATCH = 4  # users per batch in the disabled (smoke) mode
TINY_STEPS = 8  # most denoiser calls per user in the disabled mode
TINY_MODEL = {"hidden": 16, "layers": 1, "heads": 1}
