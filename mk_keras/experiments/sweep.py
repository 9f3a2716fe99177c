"""Transfer sweeps: an experiment definition -> a plan of runs -> trained runs -> merged results.

    from mk_keras.experiments import SweepConfig, run_sweep
    config = SweepConfig(name="demo", dataset_a="fashion_mnist", classes_a="fashion_garments",
                         classes_b="fashion_accessories", models=["convnext_micro_cifar", "resnet10_cifar"],
                         treatments=["baseA", "baseB", "AnB", "BnB"], depths=["all"], seeds=[0],
                         train_args={"epochs": 3, "max_per_class": 500})
    rows = run_sweep(config, "runs/demo")

Output directory: `sweep.json` (the definition and the planned runs), `runs/<run_id>/` (one `train` run
directory per run), `results/<run_id>.json` (one row per run, written atomically), `locks/`, and the merged
`results.csv`, `results.jsonl`, `report.md` and `figures/*.png` (see `mk_keras.experiments.results.merge`).

Resuming: rerunning the same sweep skips runs that have a result file; a run killed mid-training resumes
from its checkpoint (`train` resumes an unfinished run directory), and so does one whose training raised an error
other than a NaN loss or a ValueError (out of memory, I/O, a lost device): the worker retries it up to
`max_retries` times, then leaves it and its dependents to a rerun (its run directory and checkpoint stay). A
metrics.json cut off by a crash is the one case trained again from scratch. A run whose loss became NaN is
recorded with status "failed" and is not retried (delete its result file and run directory to retry). A rerun
may add seeds, models, depths, source sizes and treatments: sweep.json holds the union of every run planned in
the directory, so results of earlier invocations stay in the tables; settings that change what a run computes
(data, training arguments, name, Keras backend, the cross source of existing cross runs) must be the same.

External base A: `base_a_source` gives a model a pretrained or trained source instead of a baseA run (a
`mk_keras.sources` spec: a PyTorch checkpoint `convnext_tiny:/ckpt/x.pth`, `keras:ConvNeXtTiny:imagenet`, a
`.keras` file or a run directory of that model). It is converted once into `sources/<model>.keras` (with
`sources/<model>.json`: spec, sha256 of the source file, sha256 of the converted file), and the transfers from
A copy from it; no baseA run is trained for that model.

Run store: with `store` set, a run's directory is `<store>/<key>/` and `runs/<run_id>` is a link to it. The key
is the run's `RunSpec.spec_hash` (with the Keras backend; the path of a source run replaced by that run's key,
an external base A by its converted file's sha256), so it names everything the run computes and not the sweep
it belongs to. A run whose store entry is finished is recorded without training (the ConvNeXt-T bases of two
presets are trained once); an unfinished entry resumes; an entry is trained under `<store>/locks/<key>.lock`, so
concurrent sweeps wait for each other instead of training it twice.

Workers: any number of processes (a SLURM job array, several GPUs of one machine) run the same sweep into the
same output directory. Each repeatedly claims the first ready run in its `claim_order` (bases first) and trains
it: a run is ready when it has no result, no live process holds its lock file (`mk_keras.experiments.locks`),
and its source base has a finished result (an external base A is always ready). A run whose source failed is
recorded failed. When nothing is ready but runs are locked by other processes, the worker polls; when nothing
is ready or locked, it merges and exits. So no worker waits while a run is ready, no run is trained twice at
the same time, and the merged result equals that of one process. `shard_index` / `num_shards` only say which
runs a worker prefers.

Multi-worker training (`distribution="multi_worker"`, or "auto" with a TF_CONFIG of several tasks): the
processes of one TF_CONFIG cluster form one sweep worker. The strategy is created once per process, before
planning; the chief claims runs as above and broadcasts each run it trains, which the other processes train
with it (a collective, `Distribution.broadcast`), until it broadcasts the end.
"""

import dataclasses
import functools
import json
import os
import time
import zipfile

import keras
import numpy as np

from mk_keras import sources
from mk_keras.data.splits import check_named_split
from mk_keras.experiments import locks, results
from mk_keras.experiments.external import EXTERNAL, TRAIN_BASE_A, external_path, read_record, record_path
from mk_keras.experiments.external import external_sources as _external_sources
from mk_keras.experiments.treatments import BASES, TREATMENTS
from mk_keras.filters import FILTER_KINDS
from mk_keras.models import create_model, model_family
from mk_keras.training import MASTER_KEYS, RunSpec, TrainingFailed, reuse, train
from mk_keras.training.distribute import make_distribution, multi_worker_requested
from mk_keras.training.spec import DELTA

KINDS = (*FILTER_KINDS, "auto")
# Keyword arguments of `train` that the sweep sets per run; they cannot be given in `train_args`.
PER_RUN_ARGS = ("model", "dataset", "classes", "run_dir", "seed", "init_seed", "data_seed", "source", "n", "kind",
                "order", "freeze", "master_key_reference", "kernel_map", "channel_map", "kernel_transform", "init_hook",
                "overwrite", "flags_text")
# `train_args` that do not change what a run computes: may differ when a sweep is resumed.
_UNCOMPARED_TRAIN_ARGS = ("verbose", "checkpoint_every", "checkpoint_every_s")
# source kinds an external base A may be (`mk_keras.sources.KINDS`)
EXTERNAL_KINDS = ("run_dir", "keras_file", *sources.PRETRAINED_KINDS)


@dataclasses.dataclass
class SweepConfig:
    """An experiment: what is transferred, between which data, into which models, how often.

    Args:
      name: experiment name (the "experiment" column).
      dataset_a, classes_a: dataset spec and class selection of A (`mk_keras.data.load`).
      dataset_b, classes_b: the same for B; `dataset_b=None` means dataset_a (one dataset split in two).
      models: registered model names.
      kinds: filter kind per model ("depthwise", "pointwise", "conv" or "auto": depthwise when the model has
        depthwise layers, else conv); one entry for all models or one per model. A model may be listed
        twice with different kinds (its base models are shared).
      depths: transfer depths n: integers, "all" (1..L), "last" (L) and/or "spread:K" (K depths evenly spaced over
        1..L, both ends included), L = the model's number of `kind` layers.
      treatments: names from `TREATMENTS`. Transfer treatments need their source base and baseB.
      seeds: one base pair and one run per treatment and n for each seed.
      source_sizes: max_per_class values for A's training data (larger-source experiment): baseA and every
        run copying from A are repeated per size; empty: A uses `train_args["max_per_class"]`.
      cross_source: model whose baseA feeds the "cross" treatment (a different architecture).
      cross_kernel_map, cross_channel_map: `transfer_filters` kernel_map / channel_map for "cross".
      base_a_source: external base A per model (`mk_keras.sources` specs of `EXTERNAL_KINDS`, or "train": the
        sweep trains baseA); one entry for all models or one per model; empty: every baseA is trained.
      train_args: keyword arguments of `mk_keras.training.train` shared by every run (epochs, batch_size,
        lr, max_per_class, steps_per_epoch, ...), except `PER_RUN_ARGS`.
      eval_max_per_class_a: evaluation examples per class for runs on A (baseA), when A's test split is smaller
        than `train_args["eval_max_per_class"]` allows; 0: all; None: as for B.
      store: a run store shared by sweeps (see the module docstring); None: runs live in the sweep directory.
        Not compared on resume (it changes where runs live, not what they compute).
    """

    name: str = "sweep"
    dataset_a: str = "fashion_mnist"
    classes_a: object = None
    dataset_b: str | None = None
    classes_b: object = None
    models: list = dataclasses.field(default_factory=lambda: ["convnext_micro_cifar"])
    kinds: list = dataclasses.field(default_factory=lambda: ["auto"])
    depths: list = dataclasses.field(default_factory=lambda: ["all"])
    treatments: list = dataclasses.field(default_factory=lambda: ["baseA", "baseB", "AnB", "BnB"])
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    source_sizes: list = dataclasses.field(default_factory=list)
    cross_source: str | None = None
    cross_kernel_map: str | None = "auto"
    cross_channel_map: str | None = "auto"
    base_a_source: list = dataclasses.field(default_factory=list)
    train_args: dict = dataclasses.field(default_factory=dict)
    eval_max_per_class_a: int | None = None
    store: str | None = None

    def data(self, side):
        """(dataset spec, classes) of side "A" or "B"."""
        if side == "A":
            return self.dataset_a, self.classes_a
        return self.dataset_b or self.dataset_a, self.classes_b

    def settings(self):
        """The part of the definition that changes what every run computes or how it is reported (compared
        on resume; the cross-source fields are compared by `merge_plans` when both plans have cross runs)."""
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if k in ("name", "dataset_a", "classes_a", "dataset_b", "classes_b", "base_a_source")}
        out["dataset_b"] = self.dataset_b or self.dataset_a
        out["train_args"] = {k: v for k, v in self.train_args.items() if k not in _UNCOMPARED_TRAIN_ARGS}
        if self.eval_max_per_class_a is not None:  # absent when unset, as in sweeps defined before it existed
            out["eval_max_per_class_a"] = self.eval_max_per_class_a
        return _jsonable(out)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One (model, kind) pair with its number of `kind` layers and resolved depths."""

    model: str
    kind: str
    layers: int
    depths: tuple
    cross_depths: tuple = ()


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run. `n` is the depth reported; `train_n` the number of layers `train` copies or
    freezes (for "reversed", L - n + 1 layers from the end). `source` is the run_id of the base copied from."""

    run_id: str
    model: str
    treatment: str
    seed: int
    kind: str | None = None
    n: int | None = None
    train_n: int | None = None
    source_size: int | None = None
    source: str | None = None


@dataclasses.dataclass
class Plan:
    """A resolved sweep: the config, its arms, every run in execution order, and the Keras backend."""

    config: SweepConfig
    arms: list
    runs: list
    backend: str | None = None

    def settings(self):
        """`SweepConfig.settings` plus the backend: what a rerun into the same directory must keep."""
        return {**self.config.settings(), "backend": self.backend}

    def external_sources(self):
        """{model: spec} of the models whose base A is an external source."""
        return external_sources(self.config)

    def to_json(self):
        return _jsonable({"config": dataclasses.asdict(self.config), "backend": self.backend,
                          "arms": [dataclasses.asdict(a) for a in self.arms],
                          "runs": [dataclasses.asdict(r) for r in self.runs]})

    @classmethod
    def from_json(cls, obj):
        arms = [Arm(**{**a, "depths": tuple(a["depths"]), "cross_depths": tuple(a["cross_depths"])})
                for a in obj["arms"]]
        return cls(SweepConfig(**obj["config"]), arms, [Run(**r) for r in obj["runs"]], obj.get("backend"))


def _jsonable(obj):
    return json.loads(json.dumps(obj))


@functools.lru_cache(maxsize=None)
def layer_counts(model):
    """{kind: number of layers} of a registered model (built once with 2 classes, then discarded)."""
    from mk_keras.filters import count_filter_layers

    counts = count_filter_layers(create_model(model, num_classes=2))
    keras.backend.clear_session()
    return counts


def _as_list(value, what):
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"{what}={value!r} must be a list") from None


def resolve_depths(tokens, layers, what):
    """Sorted depths from `tokens` (ints, "all", "last" (= L), "spread:K") for a model with `layers` layers."""
    out = set()
    for token in tokens:
        text = str(token).strip()
        if text == "all":
            out.update(range(1, layers + 1))
        elif text == "last":
            out.add(layers)
        elif text.startswith("spread:") and text[7:].isdigit() and int(text[7:]) >= 2:
            count = int(text[7:])
            out.update(int(round(x)) for x in np.linspace(1, layers, min(count, layers)))
        elif text.lstrip("-").isdigit():
            n = int(text)
            if not 1 <= n <= layers:
                raise ValueError(f"depth n={n} is out of range for {what}: allowed 1..{layers}")
            out.add(n)
        else:
            raise ValueError(f"depth {token!r} is not an integer, 'all', 'last' or 'spread:K' (K >= 2)")
    return tuple(sorted(out))


def external_sources(config):
    """{model: spec} of the models whose base A is an external source (`SweepConfig.base_a_source`)."""
    return _external_sources(config.models, config.base_a_source)


def external_model(spec):
    """The registered model an external base A spec converts into, when the spec names it (checkpoints, and
    keras.applications names the converters map); None for run directories and `.keras` files (known when
    loaded). Checks that the spec's files exist; loads and downloads nothing."""
    kind = sources.spec_kind(spec)
    if kind not in EXTERNAL_KINDS:
        raise ValueError(f"base_a_source {spec!r} is a {sources.KINDS[kind]}; allowed: "
                         f"{', '.join(sources.KINDS[k] for k in EXTERNAL_KINDS)}")
    if kind == "checkpoint":
        return sources.checkpoint_spec(spec)[0]
    if kind == "keras_weights":
        from mk_keras.convert import application_models

        name, known = sources.keras_spec(spec)[0], application_models()
        if name not in known:
            raise ValueError(f"base_a_source {spec!r}: no mk_keras model is known for keras.applications.{name} "
                             f"(known: {', '.join(sorted(known)) or 'none'})")
        return known[name]
    path = sources.spec_file(spec)
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))["config"]["name"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ValueError(f"base_a_source {spec!r}: {path!r} is not a readable .keras file ({type(e).__name__})") \
            from None


def _check_external(config):
    specs = config.base_a_source
    if len(specs) not in (0, 1, len(config.models)):
        raise ValueError(f"base_a_source has {len(specs)} entries for {len(config.models)} models; give one for all "
                         f"models or one per model ({TRAIN_BASE_A!r}: the sweep trains that model's baseA)")
    per_model = {}
    for model, spec in zip(config.models, specs * len(config.models) if len(specs) == 1 else specs):
        if per_model.setdefault(model, spec) != spec:
            raise ValueError(f"base_a_source gives model {model!r} two sources ({per_model[model]!r}, {spec!r}); "
                             "a model has one base A")
    external = external_sources(config)
    for model, spec in external.items():
        named = external_model(spec)
        if named is not None and named != model:
            raise ValueError(f"base_a_source {spec!r} is a {named!r} model, not {model!r}; give one source per "
                             f"model ({TRAIN_BASE_A!r} for a baseA the sweep trains)")
    if not external:
        return
    if config.source_sizes:
        raise ValueError("source_sizes vary the size of a trained base A; they do not apply to base_a_source "
                         f"{next(iter(external.values()))!r} (use one or the other)")
    if "baseA" in config.treatments and all(m in external for m in config.models) and not config.cross_source:
        raise ValueError("treatment 'baseA' has nothing to train: every model's base A is a base_a_source; remove "
                         "baseA from the treatments")


def _check_config(config):
    """Checks of names and lists; the layer-count checks happen in `plan`."""
    for field in ("models", "kinds", "depths", "treatments", "seeds"):
        if not _as_list(getattr(config, field), field):
            raise ValueError(f"{field} is empty; give at least one value")
    unknown = [t for t in config.treatments if t not in TREATMENTS]
    if unknown:
        raise ValueError(f"unknown treatment {unknown[0]!r}; allowed: {', '.join(TREATMENTS)}")
    bad_kind = [k for k in config.kinds if k not in KINDS]
    if bad_kind:
        raise ValueError(f"unknown filter kind {bad_kind[0]!r}; allowed: {', '.join(KINDS)}")
    if len(config.kinds) not in (1, len(config.models)):
        raise ValueError(f"kinds has {len(config.kinds)} entries for {len(config.models)} models; give one kind "
                         "for all models or one per model")
    for model in [*config.models, *([config.cross_source] if config.cross_source else [])]:
        model_family(model)  # raises for unknown names, with close matches
    for seed in config.seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed {seed!r} must be an integer")
    for size in config.source_sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"source size {size!r} must be a positive integer (examples per class of A)")
    for field in ("seeds", "source_sizes", "treatments"):
        values = getattr(config, field)
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ValueError(f"{field} lists {repeated[0]!r} more than once; give each value once")
    for side in ("A", "B"):
        check_named_split(*reversed(config.data(side)))  # e.g. a Fashion-MNIST split on another dataset
    per_run = sorted(set(config.train_args) & set(PER_RUN_ARGS))
    if per_run:
        raise ValueError(f"train_args sets {per_run[0]!r}, which the sweep sets per run; remove it")
    _check_external(config)
    external = external_sources(config)
    chosen = set(config.treatments)
    for name in config.treatments:
        t = TREATMENTS[name]
        if t.is_base:
            continue
        needed = [BASES[t.source]] if t.source and not (t.source == "A" and set(config.models) <= set(external)) \
            else []
        if t.data == "B":
            needed.append("baseB")
        for base in needed:
            if base not in chosen:
                why = "its source" if base == BASES.get(t.source) else "the denominator of relative accuracy"
                raise ValueError(f"treatment {name!r} needs {base!r} ({why}) in the sweep; add {base} to the "
                                 "treatments")
    if "cross" in chosen and not config.cross_source:
        raise ValueError("treatment 'cross' needs cross_source (--cross_source=MODEL, the source architecture)")
    if config.cross_source and "cross" not in chosen:
        raise ValueError(f"cross_source={config.cross_source!r} is set but 'cross' is not among the treatments")
    if config.cross_source in config.models:
        raise ValueError(f"cross_source={config.cross_source!r} is also a target model; cross-architecture "
                         "transfer needs a different source model (use AnB for the same model)")
    if config.source_sizes and "baseA" not in chosen:
        raise ValueError("source_sizes set the training size of A, but 'baseA' is not among the treatments")
    keyed = [t for t in config.treatments if TREATMENTS[t].master_keys]
    norm = config.train_args.get("freeze_following_norm")
    if keyed and norm:
        raise ValueError(f"train_args freeze_following_norm={norm!r} does not apply to treatment {keyed[0]!r} "
                         "(master-key layers copy no norms); remove one of them")


def _auto_kind(model):
    return "depthwise" if layer_counts(model)["depthwise"] else "conv"


def _run_id(model, treatment, seed, kind=None, n=None, size=None):
    parts = [model, kind, treatment, f"a{size}" if size else None, None if n is None else f"n{n}", f"s{seed}"]
    return "-".join(p for p in parts if p)


def plan(config):
    """Validate `config` and resolve it into a `Plan` (builds each model once to count its layers, and the
    source and target of each cross-architecture copy once to map their kernels); the plan holds a
    normalised copy of `config` and the Keras backend.

    Run order: for each seed, its base models, then for each arm, treatment, source size and n its
    transfer runs. Raises ValueError (one line) for bad definitions, before anything trains.
    """
    lists = {f: _as_list(getattr(config, f), f) for f in ("models", "kinds", "depths", "treatments", "seeds",
                                                          "source_sizes", "base_a_source")}
    if all(spec == TRAIN_BASE_A for spec in lists["base_a_source"]):
        lists["base_a_source"] = []  # every base A trained: the default
    config = dataclasses.replace(config, **lists, train_args=dict(config.train_args or {}))
    _check_config(config)
    config.seeds = [int(s) for s in config.seeds]
    config.source_sizes = [int(s) for s in config.source_sizes]
    kinds = config.kinds * len(config.models) if len(config.kinds) == 1 else config.kinds
    arms = []
    for model, kind in zip(config.models, kinds):
        kind = _auto_kind(model) if kind == "auto" else kind
        if any((a.model, a.kind) == (model, kind) for a in arms):
            raise ValueError(f"model {model!r} is listed more than once with kind {kind!r}; give each "
                             "(model, kind) pair once")
        layers = layer_counts(model)[kind]
        if not layers:
            raise ValueError(f"model {model!r} has no {kind} layers; choose another kind (its layers: "
                             f"{', '.join(f'{k} {v}' for k, v in layer_counts(model).items())})")
        depths = resolve_depths(config.depths, layers, f"{model} ({layers} {kind} layers)")
        cross = ()
        if "cross" in config.treatments:
            src = layer_counts(config.cross_source)[kind]
            shared = min(layers, src)
            if not shared:
                raise ValueError(f"cross_source {config.cross_source!r} has no {kind} layers to transfer into "
                                 f"{model!r}")
            cross = resolve_depths(config.depths, shared, f"{config.cross_source} -> {model} ({shared} {kind} "
                                   "layers in both)")
        arms.append(Arm(model, kind, layers, depths, cross))
    keyed = [t for t in config.treatments if TREATMENTS[t].depthwise_only]
    if keyed and not any(a.kind == "depthwise" for a in arms):
        raise ValueError(f"treatment {keyed[0]!r} needs a model with kind depthwise; the models have "
                         f"{', '.join(f'{a.model} ({a.kind})' for a in arms)}")

    sizes = config.source_sizes or [None]
    transfers = [TREATMENTS[t] for t in dict.fromkeys(config.treatments) if not TREATMENTS[t].is_base]
    external = external_sources(config)
    runs = []
    for seed in config.seeds:
        base_models = list(dict.fromkeys(a.model for a in arms))
        if config.cross_source:
            base_models.append(config.cross_source)
        for model in base_models:
            if "baseA" in config.treatments and model not in external:
                runs += [Run(_run_id(model, "baseA", seed, size=s), model, "baseA", seed, source_size=s) for s in sizes]
            if "baseB" in config.treatments and model in config.models:
                runs.append(Run(_run_id(model, "baseB", seed), model, "baseB", seed))
        for arm in arms:
            for t in transfers:
                if t.depthwise_only and arm.kind != "depthwise":
                    continue  # master keys and identity filters are depthwise filters
                for size in sizes if t.source in ("A", "cross") else [None]:
                    source_model = config.cross_source if t.source == "cross" else arm.model
                    source = _run_id(source_model, BASES[t.source], seed, size=size) if t.source else None
                    if t.source == "A" and arm.model in external:
                        source = EXTERNAL + arm.model
                    for n in arm.cross_depths if t.source == "cross" else arm.depths:
                        train_n = arm.layers - n + 1 if t.order == "last" else n
                        runs.append(Run(_run_id(arm.model, t.name, seed, arm.kind, n, size), arm.model, t.name, seed,
                                        arm.kind, n, train_n, size, source))
    _check_transfers(config, runs)
    for run in runs:  # every run's specification is valid before anything trains
        run_spec(run, config, "")
    return Plan(config, arms, runs, keras.backend.backend())


def _check_transfers(config, runs):
    """Map the kernels of every planned copy between two architectures (the "cross" treatment) on freshly
    built models, so that a kernel or channel mismatch is a one-line ValueError before anything trains.
    Copies within one architecture pair layers of identical shapes."""
    from mk_keras.transfer import transfer_filters

    deepest = {}  # (source model, target model, kind, order, freeze) -> largest number of layers copied
    for run in runs:
        t = TREATMENTS[run.treatment]
        source_model = config.cross_source if t.source == "cross" else run.model
        if t.master_keys or not run.source or source_model == run.model:
            continue
        key = (source_model, run.model, run.kind, t.order, t.freeze)
        deepest[key] = max(deepest.get(key, 0), run.train_n)
    for (source_model, model, kind, order, freeze), n in deepest.items():
        try:
            transfer_filters(create_model(source_model, num_classes=2), create_model(model, num_classes=2), n, kind,
                             order, freeze, True, config.cross_kernel_map, config.cross_channel_map,
                             config.train_args.get("freeze_following_norm", False))
        except ValueError as e:
            raise ValueError(f"treatment 'cross' cannot copy {n} {kind} layers of {source_model} into {model}: "
                             f"{str(e).splitlines()[0]}") from None
        finally:
            keras.backend.clear_session()


def _source_path(output_dir, source):
    """Where a run's `source` (a base's run_id, or `EXTERNAL` + model) is read from."""
    if source.startswith(EXTERNAL):
        return external_path(output_dir, source[len(EXTERNAL):])
    return results.run_dir(output_dir, source)


def train_kwargs(run, config, output_dir):
    """The keyword arguments of `train` for `run` (`train_args`' `master_key_method` reaches master-key runs only)."""
    t = TREATMENTS[run.treatment]
    dataset, classes = config.data(t.data)
    kwargs = dict(config.train_args, model=run.model, dataset=dataset, classes=classes, seed=run.seed,
                  run_dir=results.run_dir(output_dir, run.run_id))
    if run.source_size and t.data == "A":
        kwargs["max_per_class"] = run.source_size  # only base A trains on A; a transfer's B keeps train_args'
    if t.data == "A" and config.eval_max_per_class_a is not None:
        kwargs["eval_max_per_class"] = config.eval_max_per_class_a or None
    if t.uses_n:
        kwargs.update(kind=run.kind, n=run.train_n, order=t.order, freeze=t.freeze)
        if t.master_keys:
            kwargs["source"] = MASTER_KEYS
            if run.source:
                kwargs["master_key_reference"] = _source_path(output_dir, run.source)
        elif t.control == "delta":
            kwargs["source"] = DELTA
        elif run.source:
            kwargs["source"] = _source_path(output_dir, run.source)
        if t.control == "shuffle":
            kwargs["kernel_transform"] = "shuffle"
        if t.source == "cross":
            kwargs.update(kernel_map=config.cross_kernel_map, channel_map=config.cross_channel_map)
    if not t.master_keys:
        kwargs.pop("master_key_method", None)
    return kwargs


def run_spec(run, config, output_dir):
    """The `RunSpec` of `run` (`train_kwargs` without run management); raises ValueError for a bad combination."""
    kwargs = train_kwargs(run, config, output_dir)
    fields = {k: v for k, v in kwargs.items() if k not in ("run_dir", "verbose")}
    try:
        return RunSpec(**fields)
    except ValueError as e:
        raise ValueError(f"run {run.run_id}: {e}") from None


def describe(run):
    """'AnB convnext_micro_cifar/depthwise n=3 seed=0' (source size included when set)."""
    what = run.model + (f"/{run.kind}" if run.kind else "")
    size = f" A:{run.source_size}/class" if run.source_size else ""
    depth = f" n={run.n}" if run.n is not None else ""
    return f"{run.treatment:<13} {what}{depth}{size} seed={run.seed}"


def _first_difference(old, new, prefix=""):
    """(key, old value, new value) of the first differing entry of two nested dicts, or None."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None


def _union(old, new):
    return list(dict.fromkeys([*old, *new]))


def _trained_backend(output_dir, runs):
    """The backend recorded in the first readable metrics.json of `runs` (sweep.json of older versions did
    not record it), or None."""
    for run in runs:
        try:
            metrics = results.read_metrics(results.run_dir(output_dir, run.run_id)) or {}
        except ValueError:
            continue  # cut off by a crash: that run is retrained
        backend = metrics.get("backend") or (metrics.get("spec") or {}).get("backend")
        if backend:
            return backend
    return None


def merge_plans(old, new, output_dir):
    """The plan of `output_dir`, which holds `old`, after planning `new` into it: the runs of `old`, then those
    of `new` that are not in it, with arms (depths), seeds, treatments, depth tokens and source sizes united.

    Raises ValueError (one line) when `new` changes a setting (`Plan.settings`), or the cross source or its
    kernel/channel maps while both plans have cross runs.
    """
    refuse = f"{output_dir!r} holds a sweep with other settings ({{}}: {{!r}} -> {{!r}}); use another output directory"
    diff = _first_difference(old.settings(), new.settings())
    if diff:
        raise ValueError(refuse.format(*diff))
    old_cross, new_cross = (any(r.treatment == "cross" for r in p.runs) for p in (old, new))
    cross_fields = ("cross_source", "cross_kernel_map", "cross_channel_map")
    if old_cross and new_cross:
        for field in cross_fields:
            if getattr(old.config, field) != getattr(new.config, field):
                raise ValueError(refuse.format(field, getattr(old.config, field), getattr(new.config, field)))
    planned = {r.run_id: r for r in old.runs}
    runs = old.runs + [r for r in new.runs if r.run_id not in planned]
    arms = {(a.model, a.kind): a for a in old.arms}
    for arm in new.arms:
        known = arms.get((arm.model, arm.kind))
        arms[arm.model, arm.kind] = arm if known is None else dataclasses.replace(
            known, depths=tuple(sorted({*known.depths, *arm.depths})),
            cross_depths=tuple(sorted({*known.cross_depths, *arm.cross_depths})))
    arms = list(arms.values())
    cross = new.config if new_cross else old.config
    config = dataclasses.replace(
        new.config, models=[a.model for a in arms], kinds=[a.kind for a in arms],
        depths=_union(map(str, old.config.depths), map(str, new.config.depths)),
        treatments=_union(old.config.treatments, new.config.treatments),
        seeds=_union(old.config.seeds, new.config.seeds),
        source_sizes=_union(old.config.source_sizes, new.config.source_sizes),
        **{field: getattr(cross, field) for field in cross_fields})
    return Plan(config, arms, runs, new.backend)


def _write_definition(output_dir, the_plan, poll_s, lock_stale_s):
    """Write sweep.json: `the_plan`, or its union with the sweep the directory holds (`merge_plans`)."""
    path = os.path.join(output_dir, "sweep.json")
    with locks.hold(results.lock_path(output_dir, "sweep.json"), poll_s, lock_stale_s):
        if os.path.exists(path):
            old = Plan.from_json(results.load_definition(output_dir))
            if old.backend is None:
                old.backend = _trained_backend(output_dir, old.runs) or the_plan.backend
            the_plan = merge_plans(old, the_plan, output_dir)
        results.atomic_write_json(path, the_plan.to_json())
    return the_plan


class _Runner:
    def __init__(self, the_plan, output_dir, train_fn, flags_text, log, poll_s, lock_stale_s, max_retries,
                 group=None):
        self.plan, self.out, self.train_fn, self.max_retries = the_plan, output_dir, train_fn, max_retries
        self.attempts, self.given_up = {}, {}  # run_id -> failed attempts; run_id -> error of a run left alone
        self.flags_text, self.log, self.poll_s, self.stale = flags_text, log, poll_s, lock_stale_s
        self.trained = 0  # runs this process trained
        self.store = the_plan.config.store
        self.by_id = {r.run_id: r for r in the_plan.runs}
        self.index = {r.run_id: i for i, r in enumerate(the_plan.runs)}
        self.group = group  # a multi-worker Distribution: its workers train each run together
        self.checked = {}  # model -> record of its external base A, checked by this process

    def _line(self, label, run, row, note="", secs=None):
        if row["status"] == "finished":
            rel = self._relative(run, row)
            what = f"top-1 {row['top1']:.4f}" + (f"  rel {rel:.3f}" if rel is not None else "")
        else:
            what = f"{row['status']}: {row.get('error')}"
        self.log(f"[{label}] {describe(run)}  {what}" + (f"  {secs:.0f} s" if secs is not None else "") + note)

    def _relative(self, run, row):
        if run.treatment == "baseA":
            return None
        base = results.read_result(self.out, _run_id(run.model, "baseB", run.seed))
        return results.relative(row, base)

    def work(self, order):
        """Claim and train the ready runs of `order` (a priority order of the plan's runs) until every run has a
        result, or none is left that this process can train and no other process holds a lock on one."""
        waiting = None
        while True:
            locked = []
            for run in order:
                if run.run_id in self.given_up or results.read_result(self.out, run.run_id) is not None:
                    continue
                source = self._source_row(run)
                if source is None:
                    continue  # its source base has no result yet
                if source["status"] != "finished":
                    row = results.make_row(self.plan.config, run, {"status": "failed",
                                           "error": f"source run {run.source} {source['status']}"})
                    results.write_result(self.out, row)
                    self._line("failed", run, row)
                    continue
                lock = self._claim(results.lock_path(self.out, run.run_id))
                if lock is None:
                    locked.append(run)
                    continue
                held = [lock]
                start = time.time()
                try:
                    row = results.read_result(self.out, run.run_id)
                    if row is None:
                        if run.source and run.source.startswith(EXTERNAL):
                            self.external(run.source[len(EXTERNAL):])
                        if self.store and not self._from_store(run, held):
                            locked.append(run)  # another sweep trains it into the store
                            continue
                        row, trained = self._train(run)
                        self.trained += trained
                        label = f"{self.trained}/{len(order)}" if trained else "store"
                        self._line(label, run, row, "" if trained else f"  (from {self._store_dir(run)})",
                                   secs=time.time() - start if trained else None)
                except ValueError:
                    raise  # bad arguments (`train` checks them before writing anything): the same on every attempt
                except Exception as e:  # not a NaN loss (a recorded result): out of memory, I/O, a lost device
                    self._transient(run, e)
                finally:
                    for each in reversed(held):
                        each.release()
                waiting = None
                break  # scan again from the top: a finished base may have made earlier runs ready
            else:
                if not locked:
                    return
                if waiting != locked[0].run_id:
                    waiting = locked[0].run_id
                    path = results.lock_path(self.out, waiting)
                    self.log(f"[wait] nothing ready: {len(locked)} runs locked by other processes (first: "
                             f"{waiting} by {locks.holder(path)})")
                time.sleep(self.poll_s)

    def follow(self):
        """A worker of a multi-worker group that is not its chief: train, in step with the chief, each run the
        chief broadcasts (into `<run_dir>/worker<i>`, see `mk_keras.training.train`) until it broadcasts -1."""
        while True:
            index = self.group.broadcast(-1)
            if index < 0:
                return
            run = self.plan.runs[index]
            text = (self.flags_text or "") + f"# run {run.run_id} of sweep {self.plan.config.name!r}\n"
            try:
                self.train_fn(**train_kwargs(run, self.plan.config, self.out), flags_text=text)
            except Exception as e:  # the chief records the run's outcome and decides about retries
                self.log(f"[worker {self.group.task_id}] {describe(run)}  {type(e).__name__}: {e}")

    def _transient(self, run, error):
        """Count a failed attempt of `run` that left no result; after `max_retries` retries this process leaves
        it (and its dependents) to a rerun. Its run directory and checkpoint stay: the retry resumes from them."""
        self.attempts[run.run_id] = self.attempts.get(run.run_id, 0) + 1
        text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        if self.attempts[run.run_id] > self.max_retries:
            self.given_up[run.run_id] = text
            what = "left for a rerun, which resumes it from its checkpoint"
        else:
            what = f"retry {self.attempts[run.run_id]} of {self.max_retries} resumes from its checkpoint"
        self.log(f"[error] {describe(run)}  {text}; {what}")

    def store_key(self, run):
        """The key of `run` in the store: the `spec_hash` of its `RunSpec` with the backend, where the path of a
        source run is replaced by that run's key and an external base A by its converted file's sha256, so the
        key covers the whole chain of training that produced the source."""
        spec = run_spec(run, self.plan.config, self.out)
        changes = {"backend": self.plan.backend}
        if run.source:
            if run.source.startswith(EXTERNAL):
                ref = "sha256:" + self.external(run.source[len(EXTERNAL):])["keras_sha256"]
            else:
                ref = "store:" + self.store_key(self.by_id[run.source])
            changes["master_key_reference" if spec.uses_master_keys else "source"] = ref
        return spec.replace(**changes).spec_hash()

    def _store_dir(self, run):
        return os.path.join(self.store, self.store_key(run))

    def _from_store(self, run, held):
        """Make `runs/<run_id>` a link to the run's store directory, holding the store entry's lock (appended to
        `held`); False while another process holds it. A run directory already there (trained without a store)
        is kept."""
        link = results.run_dir(self.out, run.run_id)
        if os.path.isdir(link) and not os.path.islink(link):
            return True
        target = os.path.abspath(self._store_dir(run))
        lock = self._claim(os.path.join(self.store, "locks", f"{os.path.basename(target)}.lock"))
        if lock is None:
            return False
        held.append(lock)
        os.makedirs(target, exist_ok=True)
        if not os.path.islink(link) or os.readlink(link) != target:
            tmp = f"{link}.{os.getpid()}.tmp"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        return True

    def _source_row(self, run):
        """The result row of `run`'s source run; {"status": "finished"} when it has none in the plan (or an
        external one), None while the source has no result."""
        if not run.source or run.source.startswith(EXTERNAL):
            return {"status": "finished"}
        return results.read_result(self.out, run.source)

    def _claim(self, path):
        """The held lock at `path`, or None while another live process holds it (a stale lock is broken)."""
        lock = locks.Lock(path)
        if lock.acquire() or locks.break_if_stale(path, self.stale) and lock.acquire():
            return lock
        return None

    def external(self, model):
        """The record of `model`'s external base A: converted into `sources/<model>.keras` under its lock unless
        an earlier process did; the source file (when it has one before loading) and the converted file must
        still have the recorded sha256."""
        if model in self.checked:
            return self.checked[model]
        spec = external_sources(self.plan.config)[model]
        path = external_path(self.out, model)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with locks.hold(results.lock_path(self.out, f"source-{model}"), self.poll_s, self.stale):
            record = read_record(self.out, model)
            if record is not None and record["spec"] == spec and os.path.isfile(path):
                source_file = sources.spec_file(spec)
                for what, file, digest in (("source file", source_file, record["sha256"]),
                                           ("converted file", path, record["keras_sha256"])):
                    if file is not None and sources.file_sha256(file) != digest:
                        raise ValueError(f"base A of {model}: the {what} {file!r} changed since the sweep converted "
                                         f"{spec!r} (sha256 {digest[:12]}... recorded); use another output directory")
                self.checked[model] = record
                return record
            start = time.time()
            loaded = sources.load_converted(spec, model)
            tmp = f"{path}.{os.getpid()}.tmp.keras"
            loaded.model.save(tmp)
            os.replace(tmp, path)
            record = {"spec": spec, "kind": loaded.kind, "model": model, "path": loaded.path,
                      "sha256": loaded.sha256, "keras_file": os.path.relpath(path, self.out),
                      "keras_sha256": sources.file_sha256(path), "parameters": loaded.model.count_params()}
            results.atomic_write_json(record_path(self.out, model), record)
            keras.backend.clear_session()
        self.log(f"[source] base A of {model}: {spec} (sha256 {(record['sha256'] or 'none')[:12]}...) -> "
                 f"{record['keras_file']}  {time.time() - start:.0f} s")
        self.checked[model] = record
        return record

    def _train(self, run):
        kwargs = train_kwargs(run, self.plan.config, self.out)
        try:
            prev = results.read_metrics(kwargs["run_dir"])
        except ValueError:  # metrics.json cut off by a crash (this process holds the run's lock): start over
            os.remove(os.path.join(kwargs["run_dir"], "metrics.json"))
            prev, kwargs["overwrite"] = None, True
        trained = not (prev is not None and prev.get("status") == "finished")
        if not trained:
            metrics = prev  # in the store, or killed after training before the result file was written
        else:  # a run that crashed or was killed without a recorded result resumes from its checkpoint
            text = (self.flags_text or "") + f"# run {run.run_id} of sweep {self.plan.config.name!r}\n"
            if self.group is not None:
                self.group.broadcast(self.index[run.run_id])  # the other workers train it with this one
            try:
                metrics = self.train_fn(**kwargs, flags_text=text)
            except TrainingFailed as e:
                metrics = {**(results.read_metrics(kwargs["run_dir"]) or {}), "status": "failed", "error": str(e)}
        row = results.make_row(self.plan.config, run, metrics)
        results.write_result(self.out, row)
        return row, trained


def claim_order(runs, shard_index=0, num_shards=1):
    """The order in which a worker looks for a ready run: runs that are another run's source first (they
    unblock others), then the rest; within each, this worker's hinted share (plan index i with
    i % num_shards == shard_index) first, then plan order."""
    sources = {r.source for r in runs}
    ranked = sorted(enumerate(runs), key=lambda ir: (ir[1].run_id not in sources, ir[0] % num_shards != shard_index,
                                                     ir[0]))
    return [r for _, r in ranked]


def run_sweep(config, output_dir, *, shard_index=0, num_shards=1, train_fn=None, flags_text=None, log=print,
              poll_s=5.0, lock_stale_s=900.0, max_retries=2):
    """Plan `config`, claim and train ready runs in `output_dir` (skipping finished ones) until none is left, merge.

    Args:
      config: a `SweepConfig`.
      output_dir: the sweep directory (created; shared by all workers).
      shard_index, num_shards: a hint of where this worker starts: it prefers the runs i with
        i % num_shards == shard_index, but takes any ready run (see the module docstring).
      train_fn: a function with the signature of `mk_keras.training.train` (default: `train` with `reuse=True`,
        which reuses traced functions across the runs of this process, bit-identically).
      flags_text: the binary's flags, stored as `output_dir/flags.txt` and in every run directory's flags.txt.
      log: progress lines (one per run).
      poll_s, lock_stale_s: how often to look again when every unfinished run is locked by other processes (or
        waits for such a run), and after how many seconds without a heartbeat a lock counts as abandoned.
      max_retries: how often this process retries a run whose training raised an error other than a NaN loss
        (resuming from its checkpoint) before leaving it, and the runs that need it, to a rerun.
    Returns the merged result rows (`results.merge`) of every run planned in `output_dir` so far (see
    `merge_plans`); rows of unfinished runs are missing. Raises `TrainingFailed` after the merge when runs were
    left after `max_retries` retries; a ValueError (bad arguments) at once.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries={max_retries!r} must be a non-negative integer")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards={num_shards!r} must be a positive integer")
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index!r} is out of range; allowed: 0..{num_shards - 1}")
    name = (config.train_args or {}).get("distribution", "auto")
    # TensorFlow allows one multi-worker strategy per process, created before other TensorFlow work (`plan`
    # builds models): create it here; every run's `train` gets the same one
    group = make_distribution(name) if multi_worker_requested(name) else None
    the_plan = plan(config)
    store = the_plan.config.store
    if store and os.path.exists(store) and not os.path.isdir(store):
        raise ValueError(f"store={store!r} is a file; give a directory (created when missing)")
    for sub in ("", "runs", "results", "locks"):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
    if store:
        os.makedirs(os.path.join(store, "locks"), exist_ok=True)
    planned = _write_definition(output_dir, the_plan, poll_s, lock_stale_s).runs
    if flags_text is not None:
        results.atomic_write_text(os.path.join(output_dir, "flags.txt"), flags_text)
    worker = f" worker {shard_index}/{num_shards}:" if num_shards > 1 else ""
    log(f"sweep {the_plan.config.name!r}:{worker} {len(the_plan.runs)} runs -> {output_dir}")
    # the real trainer reuses traced functions across this process's runs (`train(reuse=True)`: bit-identical)
    trainer = train_fn or functools.partial(train, reuse=True)
    runner = _Runner(the_plan, output_dir, trainer, flags_text, log, poll_s, lock_stale_s, max_retries, group)
    start = time.time()
    if group is not None and not group.is_chief:
        runner.follow()
    else:
        with reuse.frozen_heap():  # each run's garbage collection skips the long-lived objects
            runner.work(claim_order(the_plan.runs, shard_index, num_shards))
        if group is not None:
            group.broadcast(-1)  # the other workers stop following
    rows = results.merge(output_dir, poll_s=poll_s, lock_stale_s=lock_stale_s)
    done = sum(r["status"] == "finished" for r in rows)
    log(f"sweep {the_plan.config.name!r}:{worker} trained {runner.trained}; {done}/{len(planned)} runs finished (all "
        f"planned in {output_dir}), {time.time() - start:.0f} s; report: {os.path.join(output_dir, 'report.md')}")
    if runner.given_up:
        run_id, error = next(iter(runner.given_up.items()))
        raise TrainingFailed(f"{len(runner.given_up)} runs failed {max_retries + 1} times with errors and have no "
                             f"result (first: {run_id}: {error}); rerun the sweep to resume them from their "
                             "checkpoints")
    return rows
