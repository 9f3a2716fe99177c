"""Fixtures shared by the training tests."""

import keras
import pytest

from mk_keras import create_model


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    """A seeded (123) ConvNeXt-micro with 10 classes saved as .keras: a transfer source (test files may override)."""
    keras.utils.set_random_seed(123)
    path = tmp_path_factory.mktemp("source") / "source.keras"
    create_model("convnext_micro_cifar", 10).save(path)
    return str(path)
