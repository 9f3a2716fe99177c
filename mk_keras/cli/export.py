"""mk-export: a run as a TF SavedModel + model.keras + mk_keras_metadata.json, optionally verified.

Usage:
  mk-export --run_dir=runs/AnB_n3 [--output=saved_models/AnB_n3] [--overwrite] [--verify]
  mk-export --model_file=model.keras [--output=DIR] [--verify]
  mk-export --output=saved_models/AnB_n3 --verify        (verify an existing export)

--verify also proves the frozen kernels against the transfer: the sha256 values transfer_filters recorded in the
run's transfer_report.json (kernels as assigned) and, when reachable, the source model's kernels before mapping.

The default output is saved_models/<run directory name or .keras file stem>. Export runs Keras on TensorFlow;
under another backend (KERAS_BACKEND=jax) the binary re-executes itself with KERAS_BACKEND=tensorflow, so
JAX-trained runs export through their model.keras. Exit status: 0 ok, 1 verification found a difference,
2 bad usage (missing or unfinished run, existing output without --overwrite, corrupt .keras): one line on
stderr, nothing written.
"""

import json
import os
import sys

from absl import flags

from mk_keras.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, parse_flags, setup_logging
from mk_keras.export import KERAS_FILE, METADATA_FILE, export_saved_model, verify_saved_model

PROG = "mk-export"
_MODULE = "mk_keras.cli.export"
_REEXEC_ENV = "MK_KERAS_EXPORT_REEXEC"


def define_flags(fv):
    """Define the mk-export flags on the `flags.FlagValues` `fv`."""
    d = {"flag_values": fv}
    flags.DEFINE_string("run_dir", None, "Finished run directory to export (its model.keras, metrics.json, "
                        "transfer_report.json).", **d)
    flags.DEFINE_string("model_file", None, "A .keras file to export instead of a run directory.", **d)
    flags.DEFINE_string("output", None, "Export directory (default: saved_models/<run name>).", **d)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing export directory.", **d)
    flags.DEFINE_boolean("verify", False, "Reload the SavedModel in a fresh process, compare its outputs with the "
                         "Keras model's, check every frozen kernel bit for bit and against the hashes of the run's "
                         "transfer_report.json and the source model; exit status 1 on a difference. "
                         "Without --run_dir/--model_file: verify the export at --output.", **d)
    flags.DEFINE_float("atol", 1e-5, "--verify: largest allowed |difference| of the probabilities.", lower_bound=0.0,
                       **d)
    flags.DEFINE_integer("batch_size", 8, "--verify: random uint8 images compared.", lower_bound=1, **d)


def run(run_dir=None, model_file=None, output=None, overwrite=False, verify=False, atol=1e-5, batch_size=8):
    """Export (and/or verify); prints what was done and returns the exit status (0, or 1 when verify fails)."""
    if run_dir and model_file:
        raise ValueError("pass either --run_dir or --model_file, not both")
    source = run_dir or model_file
    if source is None:
        if not (verify and output):
            raise ValueError("nothing to export: pass --run_dir or --model_file (or --output with --verify to "
                             "verify an existing export)")
        path = output
    else:
        path = export_saved_model(source, output, overwrite=overwrite)
        with open(os.path.join(path, METADATA_FILE)) as f:
            meta = json.load(f)
        shape = ",".join(str(d) for d in meta["input"]["shape"])
        print(f"exported {source} -> {path}: SavedModel (serving_default: uint8 [batch,{shape}], serve_float32) "
              f"-> {meta['output']['classes']} class probabilities; {KERAS_FILE}; "
              f"{METADATA_FILE} ({len(meta['frozen_layers'])} frozen layers, "
              f"{len(meta['frozen_kernels'])} kernel hashes, {len(meta['transfer_proofs'])} transfer proofs)")
    if not verify:
        return EXIT_OK
    result = verify_saved_model(path, batch_size=batch_size, atol=atol)
    print(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def main(argv):
    """Parse `argv` (argv[0] is the program) and run; returns the exit status."""
    parsed = parse_flags(PROG, define_flags, argv)
    if isinstance(parsed, int):
        return parsed
    fv, _ = parsed
    try:
        return run(run_dir=fv.run_dir, model_file=fv.model_file, output=fv.output, overwrite=fv.overwrite,
                   verify=fv.verify, atol=fv.atol, batch_size=fv.batch_size)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        return fail(PROG, e, EXIT_USAGE)


def _ensure_tensorflow(argv):
    """Re-execute under KERAS_BACKEND=tensorflow when Keras runs another backend (Keras fixes it at import)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    if os.environ.get(_REEXEC_ENV):
        raise SystemExit(f"{PROG}: error: could not switch Keras to the TensorFlow backend")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", _REEXEC_ENV: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", _MODULE, *argv[1:]], env)


def main_entry():
    """Console script `mk-export`."""
    _ensure_tensorflow(sys.argv)
    setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
