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

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
