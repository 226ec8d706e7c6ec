"""Shared fixtures of the stats tests."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "calibration.py"


@pytest.fixture(scope="module")
def calib():
    """`bench/calibration.py` as a module: the tests run its simulations at small sizes."""
    spec = importlib.util.spec_from_file_location("bench_calibration", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
