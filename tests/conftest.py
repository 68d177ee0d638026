# --- benchmark.data: where the real datasets are (used by tests/test_data.py) ---------------
import os as _os
from pathlib import Path as _Path

import pytest as _pytest

_SHARED_DATASETS = _Path(__file__).resolve().parents[2] / "shared" / "datasets"


@_pytest.fixture(scope="session", autouse=True)
def _diffrec_bench_data_env():
    """Default DIFFREC_BENCH_DATA to <repo>/../shared/datasets when that folder exists."""
    if _SHARED_DATASETS.is_dir():
        _os.environ.setdefault("DIFFREC_BENCH_DATA", str(_SHARED_DATASETS))
    yield
