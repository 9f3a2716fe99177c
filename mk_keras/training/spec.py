"""The run specification: one frozen, serialisable record of everything that decides what a run computes.

`RunSpec` is what `train` consumes; binaries build it from flags, sweeps build one per planned run, tuning
builds one per trial. A run directory stores the resolved spec (`spec.json`, and `metrics.json["spec"]`) and
reports render from it, never from today's defaults. `spec_hash` (sha256 of the canonical JSON of the fields
that change results) is the run's identity.

Seeds: `seed` is the default of `init_seed` (weight initialisation, dropout / drop-path draws) and `data_seed`
(the `max_per_class` training subset, the order of the training stream and its augmentation). The evaluation set does
not depend on either: the full `eval_split`, or with `eval_max_per_class` one subset fixed by `EVAL_SUBSET_SEED`.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from mk_keras.filters import FILTER_KINDS
from mk_keras.training import recipe
from mk_keras.transfer import CHANNEL_MAPS, KERNEL_MAPS, NORM_FREEZES, ORDERS

# The `eval_max_per_class` evaluation subset: the same for every run, whatever its seeds.
EVAL_SUBSET_SEED = 0
# `source="master_keys"`: frozen master-key filters instead of filters copied from a trained source.
MASTER_KEYS = "master_keys"
# `source="delta"`: frozen identity filters (the `delta` control: no spatial filtering), depthwise only.
DELTA = "delta"
# `kernel_transform` of copied kernels: "shuffle" permutes each filter's spatial positions (the `shuffled` control).
KERNEL_TRANSFORMS = ("shuffle",)
MASTER_KEY_METHODS = ("B", "A")
# Fields that say where data live or how steps are executed and logged: a resumed run may change them, and
# they are not part of the run's identity (`spec_hash`).
EXECUTION_FIELDS = ("data_dir", "manual_dir", "distribution", "steps_per_execution", "jit_compile",
                    "checkpoint_every", "checkpoint_every_s", "eval_every", "versions", "cache",
                    "memory_budget_gb")
INPUT_PIPELINES = ("memory", "imagenet")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything one training run depends on (see `mk_keras.training.train` for the meaning of each field).

    Construct with keywords; unset seeds take `seed`. `resolve(...)` fills in what only the running process
    knows (the source file's sha256, the backend, package versions). Raises ValueError on bad values.
    """

    # model
    model: str = "convnext_micro_cifar"
    drop_path_rate: float = 0.0
    image_size: tuple | None = None
    # data
    dataset: str = "fashion_mnist"
    classes: object = None
    max_per_class: int | None = None
    eval_split: str = "test"
    eval_max_per_class: int | None = None
    holdout: float = 0.0
    drop_empty_classes: bool = False
    augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    # "memory": resize everything to the model size, cache, batch-level augmentation (small datasets);
    # "imagenet": streamed, per-image random-resized crop / flip / RandAugment / erasing, centre-crop evaluation
    input_pipeline: str = "memory"
    erase_prob: float = 0.0
    crop_pct: float = 0.875
    cache: bool | None = None  # "imagenet" pipeline: None decides from the estimated size and memory_budget_gb
    memory_budget_gb: float | None = None
    # seeds
    seed: int = 0
    init_seed: int | None = None
    data_seed: int | None = None
    deterministic: bool = False
    # recipe
    epochs: int = 10
    batch_size: int = 128
    steps_per_epoch: int | None = None
    lr: float = 8e-4
    lr_scaling: str = "linear"
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.1
    ema: bool = False
    ema_momentum: float = 0.999
    # transfer
    source: str | None = None
    source_sha256: str | None = None
    n: int = 0
    kind: str = "depthwise"
    order: str = "first"
    freeze: bool = True
    master_key_reference: str | None = None
    master_key_reference_sha256: str | None = None
    master_key_method: str | None = None  # "B" or "A"; set to "B" for source="master_keys" when unset
    kernel_transform: str | None = None
    kernel_map: str | None = None
    channel_map: str | None = None
    freeze_following_norm: object = False
    # distribution and precision
    distribution: str = "auto"
    mixed_precision: object = False
    jit_compile: bool | None = None
    steps_per_execution: int = 8
    # execution and logging
    eval_every: int = 1
    checkpoint_every: int = 100
    checkpoint_every_s: float = 300.0  # also checkpoint by wall time (0: steps and epoch ends only)
    data_dir: str | None = None
    manual_dir: str | None = None
    # filled in by `resolve`
    backend: str | None = None
    versions: dict | None = None

    def __post_init__(self):
        set_ = object.__setattr__.__get__(self)
        for key in ("init_seed", "data_seed"):
            if getattr(self, key) is None:
                set_(key, self.seed)
        if isinstance(self.image_size, (int, np.integer)) and not isinstance(self.image_size, bool):
            set_("image_size", (int(self.image_size), int(self.image_size)))
        elif self.image_size is not None:
            set_("image_size", tuple(int(x) for x in self.image_size))
        if isinstance(self.classes, list):
            set_("classes", tuple(self.classes))  # frozen: a list could be changed after hashing
        # One spelling per setting, so equal runs hash equally.
        if self.freeze_following_norm is True:
            set_("freeze_following_norm", "all")
        if self.source == MASTER_KEYS and self.master_key_method is None:
            set_("master_key_method", "B")
        if self.mixed_precision in (True, "none", None):
            set_("mixed_precision", "mixed_bfloat16" if self.mixed_precision is True else False)
        for key in ("source", "master_key_reference", "data_dir", "manual_dir"):
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                set_(key, os.fspath(value))
        _validate(self)

    def to_dict(self):
        """The fields as a JSON-ready dict."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=json_default))

    def replace(self, **changes):
        """A copy with `changes`; a new `seed` also moves `init_seed` / `data_seed` where they followed it."""
        if "seed" in changes:
            for key in ("init_seed", "data_seed"):
                if key not in changes and getattr(self, key) == self.seed:
                    changes[key] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, fields):
        """A spec from `to_dict()` output (unknown keys are an error, naming them)."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown run specification fields {unknown}; allowed: see mk_keras.training.RunSpec")
        return cls(**fields)

    def identity(self):
        """The fields that change what the run computes (`identity_of` this spec with its model's revision)."""
        from mk_keras.models import model_revision

        return identity_of(self.to_dict(), model_revision(self.model))

    def spec_hash(self):
        """sha256 of the canonical JSON of `identity()`: the run's identity."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def uses_master_keys(self):
        return self.source == MASTER_KEYS

    @property
    def copies_filters(self):
        """Whether the filters come from a source model (not master keys, identity filters or none)."""
        return self.source not in (None, MASTER_KEYS, DELTA)


def identity_of(spec_dict, model_revision=1):
    """The identity of a run from its spec dict (`RunSpec.to_dict()`, also as stored in a run directory): the
    fields without `EXECUTION_FIELDS` and without `seed` (only the default of the two seeds, which are resolved),
    plus "model_revision" where the model's builder changed after it was first registered (left out at revision 1,
    so earlier runs keep their identity)."""
    identity = {k: v for k, v in spec_dict.items() if k not in (*EXECUTION_FIELDS, "seed")}
    if model_revision != 1:
        identity["model_revision"] = model_revision
    return identity


def json_default(value):
    """`json.dump(default=...)` for NumPy scalars and arrays (anything else: its str)."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate(spec):
    """Checks that need no data, model or file, so bad values fail before anything is loaded or written."""
    from mk_keras.models import list_models, model_family

    if spec.model not in list_models():
        model_family(spec.model)  # raises with close matches
    for key, allowed in (("kind", FILTER_KINDS), ("order", ORDERS), ("lr_scaling", recipe.LR_SCALINGS),
                         ("augment", (None, "basic", "randaugment")), ("input_pipeline", INPUT_PIPELINES),
                         ("cache", (None, True, False)),
                         ("kernel_map", (None, *KERNEL_MAPS)), ("channel_map", (None, *CHANNEL_MAPS)),
                         ("freeze_following_norm", NORM_FREEZES), ("kernel_transform", (None, *KERNEL_TRANSFORMS)),
                         ("master_key_method", (None, *MASTER_KEY_METHODS))):
        if getattr(spec, key) not in allowed:
            raise ValueError(f"{key}={getattr(spec, key)!r}; allowed: {', '.join(map(repr, allowed))}")
    for key in ("seed", "init_seed", "data_seed"):
        if not _is_int(getattr(spec, key)):
            raise ValueError(f"{key}={getattr(spec, key)!r} must be an integer")
    for key in ("epochs", "batch_size", "steps_per_execution", "checkpoint_every"):
        if not _is_int(getattr(spec, key)) or getattr(spec, key) < 1:
            raise ValueError(f"{key}={getattr(spec, key)!r} must be a positive integer")
    if (isinstance(spec.checkpoint_every_s, bool) or not isinstance(spec.checkpoint_every_s, (int, float))
            or not 0 <= spec.checkpoint_every_s < np.inf):
        raise ValueError(f"checkpoint_every_s={spec.checkpoint_every_s!r} must be a number of seconds >= 0 "
                         "(0: no wall-time checkpoints)")
    for key in ("steps_per_epoch", "max_per_class", "eval_max_per_class"):
        value = getattr(spec, key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{key}={value!r} must be None or a positive integer")
    if not _is_int(spec.n) or spec.n < 0:
        raise ValueError(f"n={spec.n!r} is out of range; allowed: 0..number of {spec.kind} layers")
    for key in ("lr", "weight_decay", "warmup_epochs", "mixup", "cutmix", "drop_path_rate"):
        if not getattr(spec, key) >= 0:
            raise ValueError(f"{key}={getattr(spec, key)!r} must be >= 0")
    if spec.input_pipeline == "memory" and (spec.erase_prob or spec.cache is not None
                                            or spec.memory_budget_gb is not None):
        raise ValueError("erase_prob / cache / memory_budget_gb need input_pipeline='imagenet' (the 'memory' "
                         "pipeline always caches)")
    if not 0 <= spec.erase_prob < 1:
        raise ValueError(f"erase_prob={spec.erase_prob!r} must be in [0, 1)")
    if not 0 < spec.crop_pct <= 1:
        raise ValueError(f"crop_pct={spec.crop_pct!r} must be in (0, 1]")
    if spec.memory_budget_gb is not None and not spec.memory_budget_gb > 0:
        raise ValueError(f"memory_budget_gb={spec.memory_budget_gb!r} must be None or > 0")
    if not 0 <= spec.label_smoothing < 1:
        raise ValueError(f"label_smoothing={spec.label_smoothing!r} must be in [0, 1)")
    if not 0 <= spec.min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio={spec.min_lr_ratio!r} must be in [0, 1]")
    if not 0 <= spec.holdout <= 0.5:
        raise ValueError(f"holdout={spec.holdout!r} must be in [0, 0.5] (0: evaluate on eval_split)")
    if not _is_int(spec.eval_every) or spec.eval_every < 0:
        raise ValueError(f"eval_every={spec.eval_every!r} must be 0 (evaluate at the end only) or a positive "
                         "number of epochs")
    if spec.drop_path_rate and not model_family(spec.model).startswith("convnext"):
        raise ValueError(f"drop_path_rate={spec.drop_path_rate!r} is supported by convnext* models only, "
                         f"not {spec.model!r}")
    if spec.n and spec.source is None and not spec.freeze:
        raise ValueError("n>0 without a source only freezes layers in place (random-frozen control); it needs "
                         "freeze=True")
    if spec.freeze_following_norm and not spec.freeze:
        raise ValueError(f"freeze_following_norm={spec.freeze_following_norm!r} with freeze=False: nothing is frozen "
                         "that a norm could follow; allowed: freeze=True, or freeze_following_norm=False")
    if spec.source is None and (spec.kernel_map or spec.channel_map):
        raise ValueError(f"kernel_map={spec.kernel_map!r} / channel_map={spec.channel_map!r} map copied kernels; "
                         "without a source nothing is copied: leave them unset")
    if spec.kernel_transform and not spec.copies_filters:
        raise ValueError(f"kernel_transform={spec.kernel_transform!r} transforms copied kernels; source="
                         f"{spec.source!r} copies none: pass a trained source, or leave it unset")
    if spec.kernel_transform and spec.kind == "pointwise":
        raise ValueError(f"kernel_transform={spec.kernel_transform!r} with kind='pointwise': 1x1 kernels have no "
                         "spatial positions to permute; allowed kinds: depthwise, conv")
    for key in ("source", "master_key_reference"):
        if getattr(spec, key) is not None and not isinstance(getattr(spec, key), str):
            raise ValueError(f"{key}={getattr(spec, key)!r} must be a path string (train() also takes a keras.Model)")
    if spec.uses_master_keys or spec.source == DELTA:
        _validate_builtin_filters(spec)
    for key in ("master_key_reference", "master_key_method"):
        if getattr(spec, key) is not None and not spec.uses_master_keys:
            raise ValueError(f"{key} is set but source={spec.source!r}; it needs source={MASTER_KEYS!r}")
    recipe.policy_name(spec.mixed_precision)
    if spec.image_size is not None and (len(spec.image_size) != 2 or min(spec.image_size) < 8):
        raise ValueError(f"image_size={spec.image_size!r} must be (height, width), each >= 8")


def _validate_builtin_filters(spec):
    """source="master_keys" or "delta": frozen depthwise filters made here, not copied."""
    if spec.kind != "depthwise":
        raise ValueError(f"kind={spec.kind!r} with source={spec.source!r}; allowed: depthwise")
    if not spec.n:
        raise ValueError(f"n=0 with source={spec.source!r}; allowed: 1..number of depthwise layers")
    if not spec.freeze:
        what = "the keys are always frozen (their per-channel shifts train)" if spec.uses_master_keys else (
            "the identity filters are a frozen control")
        raise ValueError(f"freeze=False with source={spec.source!r}: {what}; allowed: freeze=True")
    # a delta layer's following norm may be frozen as it is (as random_frozen's); master-key layers copy no norm
    for key in ("kernel_map", "channel_map", *(("freeze_following_norm",) if spec.uses_master_keys else ())):
        if getattr(spec, key):
            raise ValueError(f"{key}={getattr(spec, key)!r} does not apply to source={spec.source!r}; leave it unset")
