"""mk-transfer: build a target model, copy the first (or last) n filter layers of a trained source into it,
freeze them (or not) and train on the target dataset.

    mk-transfer --flagfile=flags/transfer_small.flags --n=3
    mk-transfer --source=runs/base_garments --dataset=fashion_mnist --classes=fashion_accessories \
        --n=3 --kind=depthwise --run_dir=runs/garments3accessories
    mk-transfer --source=master_keys --model=convnext_micro_cifar --n=3 --classes=fashion_accessories \
        --run_dir=runs/master_keys_n3 [--master_key_reference=runs/base_garments] [--master_key_method=A]
    mk-transfer --source=runs/base_garments --kernel_transform=shuffle --n=3 ...   # the shuffled control
    mk-transfer --source=delta --model=convnext_micro_cifar --n=3 ...                # the delta control

--source is a trained model (.keras) or a run directory; --model defaults to the source's architecture;
cross-architecture transfers map kernels with --kernel_map and channels with --channel_map.
--source=master_keys gives the first (last) n depthwise layers of --model frozen master-key kernels with a
trainable per-channel shift, fitted to --master_key_reference's filters when given, else round-robin.
--kernel_transform=shuffle permutes the spatial positions of each copied filter (seeded by --seed, recorded);
--source=delta freezes the first (last) n depthwise layers of --model at the identity filter. The run directory
also holds transfer_report.json.
"""

import json
import os
import sys
import zipfile

from absl import flags

from mk_keras.cli import common

PROG = "mk-transfer"


def define_flags(fv):
    """Define mk-transfer's flags on `fv`; returns their names."""
    from mk_keras.filters import FILTER_KINDS
    from mk_keras.training import MASTER_KEYS
    from mk_keras.training.spec import DELTA, KERNEL_TRANSFORMS, MASTER_KEY_METHODS
    from mk_keras.transfer import CHANNEL_MAPS, KERNEL_MAPS, ORDERS

    names = common.define_training_flags(fv, model_default=None)
    flags.DEFINE_string("source", None, f"Trained source: a .keras file or a run directory; or {MASTER_KEYS} "
                        f"(frozen master-key filters) or {DELTA} (frozen identity filters, a control); those two "
                        "need --model.", flag_values=fv)
    flags.DEFINE_string("master_key_reference", None, f"With --source={MASTER_KEYS}: fit each channel's key to "
                        "this trained model's filters (.keras file or run directory); default round-robin.",
                        flag_values=fv)
    flags.DEFINE_enum("master_key_method", None, MASTER_KEY_METHODS, f"With --source={MASTER_KEYS}: the published "
                      "sigma set of the keys (default B).", flag_values=fv)
    flags.DEFINE_enum("kernel_transform", None, KERNEL_TRANSFORMS, "shuffle: permute the spatial positions of "
                      "each copied filter (the shuffled control; seeded by --seed).", flag_values=fv)
    flags.DEFINE_integer("n", 0, "Number of filter layers to copy.", lower_bound=0, flag_values=fv)
    flags.DEFINE_enum("kind", "depthwise", FILTER_KINDS, "Filter kind to transfer.", flag_values=fv)
    flags.DEFINE_enum("order", "first", ORDERS, "first: layers 1..n (AnB); last: the last n (reversed).",
                      flag_values=fv)
    flags.DEFINE_boolean("freeze", True, "Freeze the copied layers (AnB); --nofreeze fine-tunes them (AnB+).",
                         flag_values=fv)
    flags.DEFINE_enum("kernel_map", None, KERNEL_MAPS, "Map spatial kernel sizes across architectures.",
                      flag_values=fv)
    flags.DEFINE_enum("channel_map", None, CHANNEL_MAPS, "Map channel counts across architectures.",
                      flag_values=fv)
    flags.DEFINE_enum("freeze_following_norm", "false", ["false", "true", "all", "affine"],
                      "Also copy and freeze the norm after each frozen layer: true/all = the whole layer (a frozen "
                      "BatchNorm normalises with its moving statistics), affine = only scale and offset (batch "
                      "statistics kept).", flag_values=fv)
    flags.mark_flag_as_required("source", flag_values=fv)
    return [*names, "source", "master_key_reference", "master_key_method", "kernel_transform", "n", "kind", "order",
            "freeze", "kernel_map", "channel_map", "freeze_following_norm"]


def source_model_name(source):
    """The registered architecture of `source` (a `.keras` file or a run directory: read from the archive's
    config without building the model, as TensorFlow must do no work before a multi-worker strategy exists; a
    checkpoint spec: its model; `keras:<Name>:imagenet|PATH`: the mk_keras model it converts into). A corrupt
    source still fails in one line when `train` loads it."""
    from mk_keras import sources
    from mk_keras.training import MASTER_KEYS
    from mk_keras.training.spec import DELTA

    if source in (MASTER_KEYS, DELTA):
        raise ValueError(f"--source={source} needs --model (there is no source architecture); allowed: a "
                         "registered model with depthwise layers, e.g. convnext_micro_cifar")
    kind = sources.spec_kind(source) if ":" in source else None
    if kind == "checkpoint":
        return sources.checkpoint_spec(source)[0]
    if kind == "keras_weights":
        from mk_keras.convert import application_models

        name = sources.keras_spec(source)[0]
        if name not in application_models():
            raise ValueError(f"--source={source}: keras.applications {name} has no mk_keras counterpart; pass "
                             f"--model (converted applications: {', '.join(sorted(application_models()))})")
        return application_models()[name]
    path = os.path.join(source, "model.keras") if os.path.isdir(source) else source
    if not (path.endswith(".keras") and os.path.isfile(path)):
        from mk_keras.sources import load_source

        load_source(source, kinds=("run_dir", "keras_file"))  # raises its one-line error before building anything
    try:
        with zipfile.ZipFile(path) as z:
            name = json.loads(z.read("config.json"))["config"]["name"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ValueError(f"source {path!r} is not a readable .keras file ({type(e).__name__}: {e})") from None
    from mk_keras.models import list_models

    if name not in list_models():
        raise ValueError(f"source {path!r} holds a model named {name!r}, not a registered mk_keras architecture; "
                         "pass --model (mk_keras.list_models())")
    return name


def run(**kwargs):
    """Transfer and train with `mk_keras.training.train(**kwargs)`; `model=None` takes the source's."""
    from mk_keras.training import train

    if kwargs.get("model") is None:
        kwargs["model"] = source_model_name(kwargs["source"])
    return train(**kwargs)


def main(argv):
    """Parse `argv` (argv[0] is the program name), transfer and train; returns the exit status."""
    names = []

    def define(fv):
        names.extend(define_flags(fv))

    def call(fv):
        if fv.model is None:
            fv.model = source_model_name(fv.source)
        kwargs = common.training_kwargs(fv, names)
        kwargs["freeze_following_norm"] = {"false": False, "true": True}.get(fv.freeze_following_norm,
                                                                              fv.freeze_following_norm)
        common.report(PROG, run(**kwargs, flags_text=common.flagfile_text(fv, names, PROG)))

    return common.execute(PROG, define, call, argv)


def main_entry():
    common.select_backend(sys.argv, "mk_keras.cli.transfer")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
