"""Run directories laid out like `mk_keras.training.train` writes them, built without training."""

import hashlib
import json
import os

import keras
import numpy as np

from mk_keras import create_model, transfer_filters


def sha256(array):
    """sha256 of an array's C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(array)).tobytes()).hexdigest()


def make_run_dir(run_dir, model_name, n, kind, num_classes=3, status="finished", source_path=None):
    """A run directory with a target model whose first `n` `kind` layers come from a random source, frozen.

    The source is saved to `source_path` when given (else its recorded path does not exist).
    Returns `(target model, TransferReport)`.
    """
    keras.utils.set_random_seed(1)
    source = create_model(model_name, num_classes=5)
    if source_path is not None:
        os.makedirs(os.path.dirname(source_path), exist_ok=True)
        source.save(source_path)
    target = create_model(model_name, num_classes=num_classes)
    report = transfer_filters(source, target, n, kind=kind)
    os.makedirs(run_dir, exist_ok=True)
    target.save(os.path.join(run_dir, "model.keras"))
    class_names = [f"class_{i}" for i in range(num_classes)]
    dataset = {"spec": "digits", "split": "train", "class_names": class_names, "num_classes": num_classes,
               "num_examples": 48, "image_shape": [8, 8, 1], "class_mapping": {str(i): i for i in range(num_classes)},
               "classes_spec": list(range(num_classes)), "max_per_class": 16}
    source_info = {"path": source_path or "/runs/base_A/model.keras", "model": model_name,
                   "dataset": "fashion_mnist"}
    metrics = {
        "status": status, "model": model_name, "backend": keras.backend.backend(), "dataset": dataset,
        "eval_dataset": {**dataset, "split": "test", "num_examples": 12},
        "frozen_layers": report.frozen_layers,
        "transfer": {"source": source_info, "kind": kind, "n": n, "order": "first", "freeze": True,
                     "layers": [e.target_layer for e in report.entries]},
        "config": {"model": model_name, "dataset": "digits", "source": source_info["path"], "n": n, "kind": kind,
                   "order": "first"},
        "top1": 0.5,
    }
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    with open(os.path.join(run_dir, "transfer_report.json"), "w") as f:
        json.dump({"source": source_info, **report.to_dict()}, f)
    with open(os.path.join(run_dir, "flags.txt"), "w") as f:
        f.write(f"--model={model_name}\n--n={n}\n--kind={kind}\n")
    return target, report
