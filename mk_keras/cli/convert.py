"""mk-convert: a pretrained source (PyTorch checkpoint, keras.applications weights) as an mk_keras .keras file.

    mk-convert --source=convnext_tiny:/ckpt/convnext_tiny_1k_224_ema.pth --out=models/convnext_tiny_in1k.keras
    mk-convert --source=keras:ConvNeXtTiny:imagenet --out=models/convnext_tiny_keras.keras   # downloads once
    mk-convert --source=keras:MobileNetV2:mnv2.weights.h5 --model=mobilenetv2 --out=models/mnv2.keras

--source is a source spec (docs/pretrained.md): `<registry model>:<checkpoint>` (.pth, .pt, .bin, .safetensors)
or `keras:<Application>:imagenet|PATH.weights.h5`; --model is the registered mk_keras model (a checkpoint spec
names it; keras.applications sources default to the converters' mapping, e.g. ConvNeXtTiny -> convnext_tiny).
The .keras file is an ordinary source for mk-transfer, mk-filters and sweeps. Prints one line: source, sha256 of
the source file, model, parameter count. Exit status 2 (one line on stderr, nothing written) for a bad spec,
a checkpoint that does not match the model, a failed download, or an existing --out without --overwrite.
"""

import os
import sys

from absl import flags

from mk_keras.cli import common

PROG = "mk-convert"


def define_flags(fv):
    """Define mk-convert's flags on `fv`."""
    d = {"flag_values": fv}
    flags.DEFINE_string("source", None, "Source spec: <registry model>:<PATH>.pth|.pt|.bin|.safetensors or "
                        "keras:<Application>:imagenet|PATH.weights.h5.", **d)
    flags.DEFINE_string("model", None, "Registered mk_keras model (default: the checkpoint spec's model, or the "
                        "keras.applications mapping).", **d)
    flags.DEFINE_string("out", None, "Output .keras file.", **d)
    flags.DEFINE_integer("num_classes", 0, "Head size (0: the checkpoint's; keras.applications: 1000).",
                         lower_bound=0, **d)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out file.", **d)
    flags.DEFINE_enum("backend", "tensorflow", common.BACKENDS, "Keras backend (switched before Keras loads).", **d)
    flags.mark_flag_as_required("source", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)


def run(source, out, model=None, num_classes=None, overwrite=False):
    """Convert `source` into the registered `model`, save it to `out`; returns the `ModelSource`."""
    from mk_keras.sources import PRETRAINED_KINDS, KINDS, load_converted, spec_kind

    out = os.fspath(out)
    if not out.endswith(".keras"):
        raise ValueError(f"--out={out!r} must end with .keras")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"--out={out!r} exists; pass --overwrite to replace it")
    kind = spec_kind(source)
    if kind not in PRETRAINED_KINDS:
        raise ValueError(f"--source={source!r} is a {KINDS[kind]}; allowed: "
                         f"{', '.join(KINDS[k] for k in PRETRAINED_KINDS)}")
    loaded = load_converted(source, model, num_classes)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp.keras"
    loaded.model.save(tmp)
    os.replace(tmp, out)
    digest = loaded.sha256 or "none"
    print(f"{PROG}: {source} (sha256 {digest}) -> {out}: {loaded.model.name}, {loaded.model.count_params():,} "
          f"parameters, {loaded.model.output_shape[-1]} classes")
    return loaded


def main(argv):
    """Parse `argv` (argv[0] is the program name) and convert; returns the exit status."""

    def call(fv):
        run(fv.source, fv.out, fv.model, common.optional_int(fv.num_classes), fv.overwrite)

    return common.execute(PROG, define_flags, call, argv)


def main_entry():
    common.select_backend(sys.argv, "mk_keras.cli.convert")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
