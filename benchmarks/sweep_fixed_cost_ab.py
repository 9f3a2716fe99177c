"""Fixed-cost share of one sweep under two source trees (e.g. a commit before and after a change), in the same
session, alternating (A B B A ...), each sweep a fresh `mk-sweep` process with a fresh output directory and run
store, so both pay the same misses and hits.

    git worktree add /tmp/before HEAD~1
    python benchmarks/sweep_fixed_cost_ab.py --trees=/tmp/before,. --rounds=2 -- \\
        --flagfile=flags/claims/master_keys.flags --seeds=0,1 --treatments=baseA,baseB,AnB,random_frozen,shuffled,delta

Each sweep imports its tree's `mk_keras` (first on sys.path, checked; the interpreter is this one). Prints JSON: per sweep, the
tree, its wall time, the fixed-cost share of its runs (`sweep_fixed_cost.fixed_cost`: hits and misses), where a
hit's fixed cost went (medians: before `fit`, inside it beyond the steady steps, after it) and the process's peak
RSS; per tree, the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep_fixed_cost import collect, fixed_cost, timed  # noqa: E402


def run_once(tree, flags, workdir):
    """One sweep of `flags` with `tree`'s mk_keras, in `workdir`; returns its record."""
    out, store = os.path.join(workdir, "sweep"), os.path.join(workdir, "store")
    # `python -m` would put the working directory first on sys.path (and an editable install may sit behind it):
    # put the tree first, and check that its mk_keras is the one imported
    root = os.path.abspath(tree)
    boot = (f"import runpy, sys; sys.path.insert(0, {root!r}); import mk_keras; "
            f"assert mk_keras.__file__.startswith({root + os.sep!r}), mk_keras.__file__; "
            "runpy.run_module('mk_keras.cli.sweep', run_name='__main__', alter_sys=True)")
    cmd = [sys.executable, "-c", boot, *flags, f"--output_dir={out}", f"--store={store}"]
    # KERAS_BACKEND set, so `mk-sweep` never re-executes itself (`python -m`, which would import another mk_keras)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    start = time.perf_counter()
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(os.path.join(workdir, "log.txt")) as log:
            tail = log.read()[-2000:]
        raise SystemExit(f"sweep_fixed_cost_ab.py: the sweep with tree {tree!r} failed:\n{tail}")
    share = fixed_cost([store])
    hits = [t for t in timed(collect([store]).values()) if t["model_cache"] == "hit"]
    parts = {"setup_s": lambda t: t["setup_s"], "in_fit_s": lambda t: t["fit_s"] - t["steps"] * t["steady_step_s"],
             "after_fit_s": lambda t: t["after_fit_s"]}
    return {"tree": tree, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "fixed_share": share["all"]["fixed_share"], "runs": share["all"]["runs"],
            "hits": share["by_model_cache"]["hit"], "misses": share["by_model_cache"]["miss"],
            "hit_fixed_parts_median_s": {k: round(statistics.median(f(t) for t in hits), 2) if hits else None
                                         for k, f in parts.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", required=True, help="two source trees, comma-separated: A,B")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds of A B (then B A, ...); an even number gives each tree each position equally often")
    p.add_argument("flags", nargs="+", help="mk-sweep flags (after --); --output_dir and --store are set here")
    args = p.parse_args(argv)
    trees = args.trees.split(",")
    if len(trees) != 2 or not all(os.path.isdir(os.path.join(t, "mk_keras")) for t in trees):
        raise SystemExit(f"sweep_fixed_cost_ab.py: --trees={args.trees!r}; allowed: two source trees A,B that "
                         "each hold mk_keras/")
    if args.rounds < 1:
        raise SystemExit(f"sweep_fixed_cost_ab.py: --rounds={args.rounds}; allowed: a positive integer")
    backend = [f for f in args.flags if f.startswith("--backend")]
    if backend:
        raise SystemExit(f"sweep_fixed_cost_ab.py: {backend[0]}; allowed: no --backend flag (the sweeps run on "
                         "TensorFlow, the backend the reuse caches serve)")
    records = []
    for r in range(args.rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            with tempfile.TemporaryDirectory(prefix="sweep_ab_") as workdir:
                records.append(run_once(tree, args.flags, workdir))
            print(json.dumps(records[-1]), file=sys.stderr)
    summary = {t: {key: statistics.median(r[key] for r in records if r["tree"] == t)
                   for key in ("wall_s", "fixed_share", "peak_rss_mb")} for t in trees}
    json.dump({"flags": args.flags, "sweeps": records, "median": summary}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
