"""External base A of a sweep: where a pretrained source is converted to and what the sweep records about it.

A model listed with a `base_a_source` spec gets no baseA run: the spec is converted once into
`<output_dir>/sources/<model>.keras`, recorded in `<output_dir>/sources/<model>.json` (spec, kind, model, path and
sha256 of the source file, keras_file and keras_sha256 of the converted file, parameters), and the transfers
from A copy from that file. Imports no TensorFlow (the report reads it).
"""

import json
import os

# `base_a_source` entry of a model whose base A the sweep trains; `Run.source` prefix of an external base A.
TRAIN_BASE_A = "train"
EXTERNAL = "external:"


def external_sources(models, base_a_source):
    """{model: spec} of the models whose base A is external (`base_a_source`: one entry for all models or one
    per model; "train" entries and an empty list: trained)."""
    specs = list(base_a_source or [])
    if len(specs) == 1:
        specs = specs * len(models)
    return {model: spec for model, spec in zip(models, specs) if spec != TRAIN_BASE_A}


def external_path(output_dir, model):
    """The `.keras` file an external base A of `model` is converted into."""
    return os.path.join(output_dir, "sources", f"{model}.keras")


def record_path(output_dir, model):
    return os.path.join(output_dir, "sources", f"{model}.json")


def read_record(output_dir, model):
    """The record of `model`'s converted external base A in `output_dir`, or None before its conversion."""
    path = record_path(output_dir, model)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is truncated or corrupt; delete it and the .keras file next to it (the sweep "
                         "converts the source again)") from None
