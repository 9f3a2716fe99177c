"""Datasets, class splits and tf.data pipelines.

    loaded = data.load("fashion_mnist", split="train", classes="fashion_garments")
    train = data.make_pipeline(loaded, batch_size=128, image_size=(32, 32), training=True, augment="basic")

Pipelines yield raw float32 pixels in [0, 255]; the models normalise.
"""

from mk_keras.data.loading import DatasetInfo, LoadedDataset, list_datasets, load
from mk_keras.data.pipeline import make_pipeline
from mk_keras.data.splits import list_class_splits, random_half, resolve_classes

__all__ = [
    "DatasetInfo",
    "LoadedDataset",
    "list_class_splits",
    "list_datasets",
    "load",
    "make_pipeline",
    "random_half",
    "resolve_classes",
]
