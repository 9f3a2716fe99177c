"""`mk-sweep --smoke`: every arm and treatment of a sweep for a couple of steps on synthetic data, before GPU time.

    from mk_keras.experiments.smoke import run_smoke
    ok = run_smoke(config, "runs/paper/imagenet_convnext/smoke")

`smoke_config` keeps the sweep's models, kinds, treatments, seeds, training recipe (augmentation, input pipeline,
mixup/cutmix, precision, ...) and replaces only what a smoke test cannot afford or reach:

- data: A and B become `synthetic:` datasets (`mk_keras.data.synthetic`) with the class counts of the real
  selections (read from TFDS metadata, nothing downloaded) and their image shape (sources of variable size, such as
  ImageNet and Food-101, become `VARIABLE_SIDE` px JPEGs; JPEG wherever the sweep uses `input_pipeline="imagenet"`,
  which then streams them undecoded (`cache=False` unless the sweep sets it), as a full-size run does);
- recipe length: `SMOKE_EPOCHS` epoch of `SMOKE_STEPS` steps at batch `SMOKE_BATCH`, evaluated at its end on the
  `synthetic.TEST_EXAMPLES` test images, a checkpoint every step;
- depths: one n per treatment, the deepest valid for every arm (min over arms of their layer counts);
- seeds: the first one only (another seed runs the same code);
- source sizes: 1, 2, ... examples per class in the sweep's order (the real ones exceed the synthetic data);
- an external base A `keras:<App>:imagenet` (a download): the same application with random weights, saved as a
  local `.weights.h5` and converted through the same path.

It proves that the sweep plans, builds, transfers, freezes, trains, checkpoints, evaluates, saves and merges
without error at the preset's image size; it proves nothing about accuracy, speed or memory at full scale.
"""

import dataclasses
import math
import os
import shutil
import time

from mk_keras.data import synthetic
from mk_keras.data.splits import resolve_classes

SMOKE_EPOCHS = 1
SMOKE_STEPS = 2
SMOKE_BATCH = 4
VARIABLE_SIDE = 256  # 224 / crop_pct 0.875: the shorter side ImageNet evaluation resizes to
MARKER = "smoke.json"  # written into a smoke directory; only such a directory is replaced by a new smoke run


def dataset_shape(spec, classes):
    """(number of selected classes, image shape (H, W, C), None where the size varies) of a dataset spec, from
    metadata: TFDS builder info (nothing downloaded or prepared), other specs loaded (local files only)."""
    if spec.startswith("tfds:"):
        import tensorflow_datasets as tfds

        name = spec[len("tfds:"):]
        try:
            info = tfds.builder(name).info
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(f"unknown TFDS dataset {name!r}; see tfds.list_builders()") from None
        image_key, label_key = info.supervised_keys
        indices, _ = resolve_classes(classes, list(info.features[label_key].names), spec)
        return len(indices), tuple(info.features[image_key].shape)
    from mk_keras import data

    info = data.load(spec, classes=classes, download=False).info
    return info.num_classes, tuple(info.image_shape)


def _random_weights(spec, weights_dir, log):
    """`keras:<App>` with random weights saved once as `<weights_dir>/<App>.weights.h5`; returns its spec."""
    import keras

    from mk_keras import sources

    name = sources.keras_spec(spec)[0]
    path = os.path.join(weights_dir, f"{name}.weights.h5")
    if not os.path.isfile(path):
        os.makedirs(weights_dir, exist_ok=True)
        getattr(keras.applications, name)(weights=None).save_weights(path)
        keras.backend.clear_session()
    log(f"smoke: base A {spec} replaced by keras:{name} with random weights ({path}); nothing downloaded")
    return f"keras:{name}:{path}"


def _arm_layers(config):
    """Layer counts of every (model, kind) arm, and of the cross source in the arms' kinds."""
    from mk_keras.experiments.sweep import layer_counts

    kinds = config.kinds * len(config.models) if len(config.kinds) == 1 else config.kinds
    counts = []
    for model, kind in zip(config.models, kinds):
        if kind == "auto":
            kind = "depthwise" if layer_counts(model)["depthwise"] else "conv"
        counts.append(layer_counts(model)[kind])
        if config.cross_source and "cross" in config.treatments:
            counts.append(layer_counts(config.cross_source)[kind])
    return counts


def smoke_config(config, weights_dir, log=print):
    """The smoke version of the `SweepConfig` `config` (see the module docstring); `weights_dir`: where random
    weights replacing a downloaded base A are written."""
    from mk_keras import sources

    args = dict(config.train_args)
    imagenet = args.get("input_pipeline") == "imagenet"
    sizes = list(config.source_sizes)
    data, least = {}, {}
    for which in ("A", "B"):
        spec, classes = config.data(which)
        k, shape = dataset_shape(spec, classes)
        least[which] = math.ceil(SMOKE_BATCH / k)  # examples per class for one full batch
        per_class = least[which] * len(sizes) if which == "A" and sizes else least[which]
        synthetic_shape = tuple(VARIABLE_SIDE if d is None else d for d in shape[:2]) + (shape[2],)
        data[which] = synthetic.spec(k, synthetic_shape, per_class, jpeg=imagenet)
        log(f"smoke: {which} = {spec} classes={classes!r} ({k} classes, images "
            f"{'x'.join('?' if d is None else str(d) for d in shape)}) -> {data[which]}")
    if sizes:
        smoke_sizes = [least["A"] * (sorted(sizes).index(s) + 1) for s in sizes]
        log(f"smoke: source sizes {sizes} -> {smoke_sizes} examples per class")
        sizes = smoke_sizes
    external = []
    for spec in config.base_a_source:
        if spec.startswith(sources.KERAS_PREFIX) and sources.keras_spec(spec)[1] == sources.IMAGENET:
            spec = _random_weights(spec, weights_dir, log)
        external.append(spec)
    args.update(epochs=SMOKE_EPOCHS, steps_per_epoch=SMOKE_STEPS, batch_size=SMOKE_BATCH, eval_every=1,
                checkpoint_every=1, max_per_class=None, eval_max_per_class=None, data_dir=None, manual_dir=None,
                verbose=0)
    if imagenet and args.get("cache") is None:
        args["cache"] = False  # the streamed path a full-size ImageNet run takes
    depth = min(_arm_layers(config))
    log(f"smoke: one depth per treatment: n={depth} (the deepest valid for every arm; planned: "
        f"{', '.join(map(str, config.depths))})")
    if len(config.seeds) > 1:
        log(f"smoke: seed {config.seeds[0]} only (planned: {', '.join(map(str, config.seeds))})")
    return dataclasses.replace(config, dataset_a=data["A"], classes_a=None, dataset_b=data["B"], classes_b=None,
                               eval_max_per_class_a=None,
                               depths=[str(depth)], seeds=list(config.seeds[:1]), source_sizes=sizes,
                               base_a_source=external, train_args=args, store=None)


def _failing_as_run_failure(train_fn):
    """`train_fn` whose errors become `TrainingFailed`, so the sweep records the run as failed and goes on."""
    from mk_keras.training import TrainingFailed

    def train(**kwargs):
        try:
            return train_fn(**kwargs)
        except TrainingFailed:
            raise
        except Exception as e:  # the smoke's point: report every failing run, not stop at the first
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            # a tf.function error starts with "in user code:" and ends with the error itself
            raise TrainingFailed(f"{type(e).__name__}: {lines[-1] if lines else ''}") from e

    return train


def run_smoke(config, smoke_dir, *, train_fn=None, flags_text=None, log=print):
    """Run `smoke_config(config)` into `smoke_dir` (a previous smoke run there is replaced; any other existing
    directory is refused) and log one PASS/FAIL line per planned run; returns True when every run finished."""
    from mk_keras.experiments import results, run_sweep
    from mk_keras.training import train

    if os.path.exists(smoke_dir):
        if not os.path.isfile(os.path.join(smoke_dir, MARKER)):
            raise FileExistsError(f"smoke output directory {smoke_dir!r} exists and holds no {MARKER} (not a smoke "
                                  "run's); choose another --output_dir")
        shutil.rmtree(smoke_dir)
    os.makedirs(smoke_dir)
    start = time.time()
    smoke = smoke_config(config, os.path.join(smoke_dir, "random_weights"), log)
    results.atomic_write_json(os.path.join(smoke_dir, MARKER), {"sweep": config.name})
    rows = run_sweep(smoke, smoke_dir, train_fn=_failing_as_run_failure(train_fn or train), flags_text=flags_text,
                     log=log)
    by_id = {r["run_id"]: r for r in rows}
    planned = results.load_definition(smoke_dir)["runs"]
    failed = 0
    for run in planned:
        row = by_id.get(run["run_id"], {"status": "missing", "error": "no result"})
        ok = row["status"] == "finished"
        failed += not ok
        log(f"  {'PASS' if ok else 'FAIL'}  {run['run_id']}" + ("" if ok else f"  {row['status']}: {row.get('error')}"))
    log(f"smoke {config.name!r}: {len(planned) - failed}/{len(planned)} runs passed, {time.time() - start:.0f} s -> "
        f"{smoke_dir} (report: {os.path.join(smoke_dir, 'report.md')})")
    results.atomic_write_json(os.path.join(smoke_dir, MARKER), {"sweep": config.name, "runs": len(planned),
                                                                 "failed": failed})
    return failed == 0
