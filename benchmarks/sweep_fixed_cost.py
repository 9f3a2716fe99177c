"""Fixed-cost share of sweeps that already ran, from the "timing" record `train` writes into each run's
metrics.json (mk_keras.training.run._timing): fixed cost = a run's `total_s` (its `train` call) minus its steps x
its median steady step time (setup, tracing, the input stream's first pass, final evaluation, saving).

    python benchmarks/sweep_fixed_cost.py runs/claims/store > fixed_cost.json

Each argument is a run directory, a sweep directory or a run store; every metrics.json below it counts once
(run directories a sweep links from the store are the same files). Runs finished before timing was recorded, and
resumed runs (their record covers the last session only), are counted ("left_out_runs") but left out of the
share. Prints JSON.
"""

import argparse
import glob
import json
import os
import statistics
import sys


def collect(paths):
    """{real path: metrics dict} of every finished run's metrics.json under `paths`."""
    found = {}
    for path in paths:
        if not os.path.isdir(path):
            raise SystemExit(f"sweep_fixed_cost.py: {path!r} is not a directory; pass run, sweep or store "
                             "directories")
        for name in glob.glob(os.path.join(path, "**", "metrics.json"), recursive=True):
            real = os.path.realpath(name)
            if real not in found:
                with open(real) as f:
                    metrics = json.load(f)
                if metrics.get("status") == "finished":
                    found[real] = metrics
    return found


def _summary(timings):
    total = sum(t["total_s"] for t in timings)
    fixed = sum(t["fixed_s"] for t in timings)
    return {"runs": len(timings), "total_s": round(total, 1), "fixed_s": round(fixed, 1),
            "fixed_share": round(fixed / total, 3) if total else None,
            "median_fixed_s": round(statistics.median(t["fixed_s"] for t in timings), 2) if timings else None,
            "median_steady_step_ms": (round(1e3 * statistics.median(t["steady_step_s"] for t in timings), 2)
                                      if timings else None)}


def _kept(metrics):
    return [m for m in metrics
            if m.get("timing") and m["timing"].get("fixed_s") is not None and not m.get("resumed_at_steps")]


def timed(metrics):
    """The timing records of the runs the share counts: timed, not resumed."""
    return [m["timing"] for m in _kept(metrics)]


def fixed_cost(paths):
    runs = collect(paths)
    kept = _kept(runs.values())
    timings = [m["timing"] for m in kept]
    by_cache = {state: _summary([t for t in timings if t["model_cache"] == state]) for state in ("hit", "miss", "off")}
    by_model = {}
    for m in kept:
        by_model.setdefault(m["model"], []).append(m["timing"])
    return {"paths": list(paths), "finished_runs": len(runs), "left_out_runs": len(runs) - len(timings),
            "all": _summary(timings), "by_model_cache": by_cache,
            "by_model": {k: _summary(v) for k, v in sorted(by_model.items())}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run, sweep or store directories")
    args = p.parse_args(argv)
    json.dump(fixed_cost(args.paths), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
