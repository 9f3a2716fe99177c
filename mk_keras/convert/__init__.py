"""Pretrained weights from other frameworks into mk_keras models (PyTorch state dicts, keras.applications).

    from mk_keras.convert import convert_checkpoint, convert_application
    model = convert_checkpoint("convnext_tiny_1k_224_ema.pth", "convnext_tiny")
    model = convert_application("ConvNeXtTiny", weights="imagenet")

Source specs (`mk_keras.sources.load_source`, `mk-convert`, sweeps) use these; see docs/pretrained.md.
"""

from mk_keras.convert.checkpoints import (FAMILY_MODULES, application, application_models, convert_application,
                                          convert_checkpoint, family_converter, supported_families)
from mk_keras.convert.core import CHECKPOINT_SUFFIXES, Assign, apply_mapping, read_checkpoint

__all__ = ["Assign", "CHECKPOINT_SUFFIXES", "FAMILY_MODULES", "application", "application_models", "apply_mapping",
           "convert_application", "convert_checkpoint", "family_converter", "read_checkpoint",
           "supported_families"]
