"""Sweep results: one JSON file per run, relative accuracy, and the merge into tables, figures and a report.

Row columns (`COLUMNS`): experiment, model, kind, treatment, n, seed, source_size (examples per class of A
for the larger-source experiment; empty: the sweep's max_per_class), dataset (what the run trained on),
source (run_id of the base the filters came from; `external:<model>` for an external base A, described in
`sources/<model>.json`), top1, top5, relative_accuracy (top1 / top1 of baseB of
the same model and seed; empty for baseA), trainable_params, frozen_params (weights of the frozen layers),
epochs (completed), wall_time_s (training time `train` reports, summed over resumptions), status (finished /
failed), error, run_id.
"""

import csv
import io
import json
import math
import os
import uuid

import numpy as np

from mk_keras.experiments import locks, stats
from mk_keras.experiments.treatments import TREATMENTS

COLUMNS = ("experiment", "model", "kind", "treatment", "n", "seed", "source_size", "dataset", "source", "top1",
           "top5", "relative_accuracy", "trainable_params", "frozen_params", "epochs", "wall_time_s", "status",
           "error", "run_id")


def run_dir(output_dir, run_id):
    return os.path.join(output_dir, "runs", run_id)


def result_path(output_dir, run_id):
    return os.path.join(output_dir, "results", f"{run_id}.json")


def lock_path(output_dir, run_id):
    return os.path.join(output_dir, "locks", f"{run_id}.lock")


def atomic_write_text(path, text):
    """Write `text` to a unique temporary file, then `os.replace` it onto `path`."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1))


def _read_json(path, remedy):
    """The JSON content of `path`, or None when it does not exist; a truncated or corrupt file raises a
    one-line ValueError naming it and `remedy` (what to do about it)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise ValueError(f"{path} is truncated or corrupt ({reason}); {remedy}") from None


def read_result(output_dir, run_id):
    """The stored row of `run_id`, or None."""
    return _read_json(result_path(output_dir, run_id),
                      f"delete it and rerun the sweep to redo run {run_id} (its row is rebuilt from "
                      f"{run_dir(output_dir, run_id)}/metrics.json when that run finished, else it is retrained)")


def write_result(output_dir, row):
    atomic_write_json(result_path(output_dir, row["run_id"]), row)


def read_metrics(path):
    """metrics.json of the run directory `path`, or None."""
    return _read_json(os.path.join(path, "metrics.json"),
                      f"delete the run directory {path} (and its results/<run_id>.json, if any) and rerun the "
                      "sweep to retrain that run")


def dataset_label(spec, classes):
    if classes is None:
        return spec
    return f"{spec}[{','.join(map(str, classes)) if isinstance(classes, (list, tuple)) else classes}]"


def make_row(config, run, metrics):
    """The result row of `run` (a `sweep.Run`) from `train`'s metrics dict (relative accuracy: at merge)."""
    params = metrics.get("params") or {}
    return {
        "experiment": config.name,
        "model": run.model,
        "kind": run.kind,
        "treatment": run.treatment,
        "n": run.n,
        "seed": run.seed,
        "source_size": run.source_size,
        "dataset": dataset_label(*config.data(TREATMENTS[run.treatment].data)),
        "source": run.source,
        "top1": metrics.get("top1"),
        "top5": metrics.get("top5"),
        "relative_accuracy": None,
        "trainable_params": params.get("trainable"),
        "frozen_params": params.get("frozen"),
        "epochs": metrics.get("epochs_completed"),
        "wall_time_s": metrics.get("wall_time_s"),
        "status": metrics.get("status"),
        "error": metrics.get("error"),
        "run_id": run.run_id,
    }


def relative(row, base_row):
    """top1 of `row` / top1 of `base_row` (baseB), or None when either is missing or not finished."""
    if row is None or base_row is None or row.get("status") != "finished" or base_row.get("status") != "finished":
        return None
    if not base_row.get("top1"):
        return None
    return row["top1"] / base_row["top1"]


def add_relative_accuracy(rows):
    """Copies of `rows` with relative_accuracy = top1 / top1 of baseB (same model and seed); None for baseA."""
    bases = {(r["model"], r["seed"]): r for r in rows if r["treatment"] == "baseB"}
    return [{**r, "relative_accuracy": None if r["treatment"] == "baseA" else
             relative(r, bases.get((r["model"], r["seed"])))} for r in rows]


def load_definition(output_dir):
    """The sweep.json of `output_dir` (config, arms, runs)."""
    definition = _read_json(os.path.join(output_dir, "sweep.json"),
                            "delete it and rerun the sweep (mk-sweep --flagfile="
                            f"{os.path.join(output_dir, 'flags.txt')}, plus any seeds, depths, models or treatments "
                            "that earlier reruns added) to rewrite it")
    if definition is None:
        raise FileNotFoundError(f"{output_dir!r} holds no sweep.json; run the sweep first (or check the path)")
    return definition


def collect(output_dir, definition):
    """Result rows of the planned runs that have one, in plan order, with relative accuracy."""
    rows = [read_result(output_dir, r["run_id"]) for r in definition["runs"]]
    return add_relative_accuracy([r for r in rows if r is not None])


def _spread(values):
    """(mean, sample std, `stats.mean_ci` half-width) of the non-None `values`; std and half-width None
    below two values, everything None without values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    mean, half = stats.mean_ci(values)
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else None, half


def summarize(rows):
    """Per (model, kind, treatment, source_size, n), in order of first appearance, over the seeds of the
    finished runs: mean, sample std ("_std") and 95 % Student-t CI half-width of the mean ("_ci") of top1 and
    relative_accuracy. Relative accuracy is already a per-seed ratio to baseB, so its CI is the paired
    comparison with baseB. Parameter counts are the first seed's (they do not depend on the seed)."""
    groups = {}
    for r in rows:
        if r["status"] == "finished":
            groups.setdefault((r["model"], r["kind"], r["treatment"], r["source_size"], r["n"]), []).append(r)
    out = []
    for (model, kind, treatment, size, n), members in groups.items():
        top1, top1_std, top1_ci = _spread([m["top1"] for m in members])
        rel, rel_std, rel_ci = _spread([m["relative_accuracy"] for m in members])
        out.append({"model": model, "kind": kind, "treatment": treatment, "source_size": size, "n": n,
                    "seeds": len(members), "top1": top1, "top1_std": top1_std, "top1_ci": top1_ci,
                    "relative_accuracy": rel, "relative_accuracy_std": rel_std, "relative_accuracy_ci": rel_ci,
                    "relative_accuracy_seeds": sum(m["relative_accuracy"] is not None for m in members),
                    "frozen_params": members[0].get("frozen_params"),
                    "trainable_params": members[0].get("trainable_params")})
    return out


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_tables(output_dir, rows):
    """results.csv and results.jsonl (one row per run, `COLUMNS`), each written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_value(r.get(k)) for k in COLUMNS} for r in rows)
    csv_path, jsonl_path = os.path.join(output_dir, "results.csv"), os.path.join(output_dir, "results.jsonl")
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(jsonl_path, "".join(json.dumps({k: r.get(k) for k in COLUMNS}) + "\n" for r in rows))
    return csv_path, jsonl_path


def merge(output_dir, poll_s=1.0, lock_stale_s=900.0):
    """Build results.csv, results.jsonl, figures/*.png and report.md (with `stats.paired_differences`) from
    the result files of `output_dir` (runs without a result are left out and listed in the report); returns
    the rows.

    Merges are serialised by a lock, and each reads the result files after taking it, so the last merge
    of concurrent shards sees every result.
    """
    from mk_keras.experiments import plots, report

    load_definition(output_dir)  # fail early when there is no sweep
    os.makedirs(os.path.dirname(lock_path(output_dir, "merge")), exist_ok=True)
    with locks.hold(lock_path(output_dir, "merge"), poll_s, lock_stale_s):
        definition = load_definition(output_dir)
        rows = collect(output_dir, definition)
        write_tables(output_dir, rows)
        summary = summarize(rows)
        paired = stats.paired_differences(rows)
        figures = plots.make_figures(rows, summary, paired, definition, os.path.join(output_dir, "figures"))
        report.write_report(output_dir, definition, rows, summary, paired, figures)
    return rows
