"""Run directories: what a run writes, reading back an earlier attempt, and deciding whether to resume.

    <run_dir>/flags.txt             flagfile that reproduces the run (binaries)
    <run_dir>/spec.json             the resolved `RunSpec` and its hash
    <run_dir>/metrics.json          status, results, the spec, initial-weight hashes (see `train`)
    <run_dir>/transfer_report.json  what was copied / frozen, with sha256 proofs
    <run_dir>/model.keras           the final model
    <run_dir>/tensorboard/          epoch scalars; a finished run's HParams session
    <run_dir>/checkpoint/state.npz  while running only
"""

import json
import os
import shutil

from mk_keras.training import checkpoint
from mk_keras.training.spec import identity_of, json_default

CHECKPOINT_DIR = "checkpoint"
ARTIFACTS = ("metrics.json", "spec.json", "flags.txt", "transfer_report.json", "model.keras", "tensorboard",
             CHECKPOINT_DIR)


def write_json(path, obj):
    """Write `obj` as JSON to `path` atomically (a temporary file, then `os.replace`)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=json_default)
    os.replace(tmp, path)


def read_json(path):
    """The JSON in `path`, or None when it does not exist; a corrupt file is a ValueError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it was probably cut off by a crash: delete it (or the "
                         "run directory) to start that run over") from None


def check_writable(run_dir):
    """Raise a one-line error when `run_dir` cannot be a directory (it, or a parent, is a regular file)."""
    path = os.path.abspath(run_dir)
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    if path and not os.path.isdir(path):
        raise FileExistsError(f"run directory {run_dir!r} cannot be created: {path!r} is a regular file")


def inspect(run_dir, overwrite, spec):
    """Read-only check of `run_dir`: the checkpoint meta to resume from, or None to start fresh.

    Raises when it holds a finished run (without `overwrite`) or an unfinished run of another specification
    (fields in `EXECUTION_FIELDS` may change on resume).
    """
    check_writable(run_dir)
    if overwrite:
        return None
    prev = read_json(os.path.join(run_dir, "metrics.json"))
    if prev is None:
        return None
    if prev.get("status") == "finished":
        raise FileExistsError(f"run directory {run_dir!r} holds a finished run; pass overwrite (--overwrite) to "
                              "replace it, or choose another run directory")
    # runs from before model revisions were recorded: revision 1
    old = identity_of(prev.get("spec") or {}, prev.get("model_revision", 1))
    new = spec.identity()
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise ValueError(f"run directory {run_dir!r} holds an unfinished run with other settings ({diff}); pass "
                         "overwrite (--overwrite) to start over, or choose another run directory")
    return checkpoint.read_meta(os.path.join(run_dir, CHECKPOINT_DIR))


def prepare(run_dir, overwrite, spec, flags_text, transfer_report):
    """Create `run_dir` (clearing this module's artifacts when `overwrite`) and write the static files."""
    if overwrite:
        for name in ARTIFACTS:
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "spec.json"), {"spec": spec.to_dict(), "spec_hash": spec.spec_hash()})
    if flags_text is not None:
        with open(os.path.join(run_dir, "flags.txt"), "w") as f:
            f.write(flags_text)
    if transfer_report is not None:
        write_json(os.path.join(run_dir, "transfer_report.json"), transfer_report)
