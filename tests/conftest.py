"""Shared fixtures. Set KERAS_BACKEND before running pytest to pick the backend (default: tensorflow)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torchvision (and timm, which imports it) segfaults when imported after TensorFlow (torch 2.14.1, TF 2.21);
# imported first, both work in one process. The conversion tests use them as reference models.
try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

import gc  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# Objects alive now (torch, Keras and its backend's modules) live as long as the process: move them out of the
# collector's reach, so the gc.collect() in every test's clear_session does not traverse them again (measured:
# teardown 0.75 s -> 0.05 s per test in tests/test_filters.py, 2-core machine, 2026-11-30).
gc.freeze()


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
