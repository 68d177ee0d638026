"""Fixtures of the throughput benchmarks.

Enabled (`python -m pytest tests/benchmarks --benchmark-enable --benchmark-json=results/bench/cpu.json`,
or `tox -e bench`): the real beauty data, the models' default sizes, the batch sizes of the test ids.
Disabled (the normal test run, `--benchmark-disable` in pyproject): every body runs once on a tiny
synthetic split with tiny models, as a smoke test of the benchmarked code paths.

Environment:
- BENCH_DEVICE (default "cpu"): "cuda" runs the same benchmarks on a GPU; timed regions synchronise.
- BENCH_THREADS (default 1): torch threads during each benchmark (the previous value is restored).
- BENCH_MAX_ROWS (default 256000): sampling cases with N x batch above it are skipped when enabled
  (N=1000 at batch 1024 on one CPU thread takes many minutes); set it higher for the full grid.
"""
from __future__ import annotations

import pytest
import torch

from benchmark.data import load_dataset
from benchmark.speed import synchronize
from benchmark.splits import leave_one_out
from tests.benchmarks.settings import DEVICE, THREADS, TINY_BATCH, TINY_MODEL, TINY_STEPS
from tests.synthetic import chain_dataset


def is_enabled(config) -> bool:
    return not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")


@pytest.fixture(scope="session")
def enabled(request) -> bool:
    return is_enabled(request.config)


@pytest.fixture(scope="session")
def split(enabled):
    """beauty when enabled; a small synthetic chain (same code paths) when disabled."""
    if enabled:
        return leave_one_out(load_dataset("beauty"))
    return leave_one_out(chain_dataset(n_items=50, users=40, max_len=12))


@pytest.fixture(scope="session")
def size(enabled):
    """The sizes to use: the real ones when enabled, tiny ones (same code paths) when disabled."""

    class Size:
        def batch(self, b: int) -> int:
            return b if enabled else TINY_BATCH

        def steps(self, n: int) -> int:
            return n if enabled else min(n, TINY_STEPS)

        def model(self, cfg: dict) -> dict:
            return dict(cfg) if enabled else {**cfg, **TINY_MODEL}

    return Size()


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def bench(benchmark, enabled):
    """bench(fn, rounds, **info): times `fn` (synchronised on a GPU) for `rounds` rounds of one call
    each, after one warm-up round when rounds > 1; `info` goes into the JSON's extra_info."""

    def run(fn, rounds: int = 3, **info):
        def timed():
            out = fn()
            synchronize(DEVICE)
            return out

        benchmark.extra_info.update({"device": DEVICE, "threads": THREADS, "real_data": enabled, **info})
        return benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)

    return run
