"""Paired comparisons of sweep treatments: at one seed every run of a model starts from the same seed (initial
weights, data order), so treatments are compared seed by seed. For a comparison X − Y the differences are taken
per (model, kind, n, source_size, seed) and summarised by their mean and a Student-t 95 % confidence interval
over the seeds.

Differences: `top1_pp` = 100 * (top-1 of X − top-1 of Y), in percentage points; `rel` = relative accuracy of
X − relative accuracy of Y (relative accuracy = top-1 / top-1 of baseB of the same model and seed; for
Y = baseB it is 1, so `rel` = top-1 of X / top-1 of baseB − 1).
"""

import math

import numpy as np
import scipy.stats

from mk_keras.experiments.treatments import TREATMENTS

CONFIDENCE = 0.95


def mean_ci(values, confidence=CONFIDENCE):
    """(mean, half-width) of `values` with half-width = t_{(1+confidence)/2, k-1} * s / sqrt(k) (Student t over
    the k values, s their sample standard deviation); half-width None for fewer than two values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = float(np.mean(values))
    k = len(values)
    if k < 2:
        return mean, None
    half = scipy.stats.t.ppf(0.5 + confidence / 2, k - 1) * float(np.std(values, ddof=1)) / math.sqrt(k)
    return mean, float(half)


def comparisons(treatments):
    """[(X, Y)] for the treatments present: each transfer treatment − baseB, AnB − BnB, AnB − random_frozen."""
    present = set(treatments)
    out = [(t, "baseB") for t in TREATMENTS if t in present and not TREATMENTS[t].is_base and "baseB" in present]
    out += [("AnB", y) for y in ("BnB", "random_frozen") if {"AnB", y} <= present]
    return out


def _partner_key(y, model, kind, size, n, seed):
    """The key of Y's run paired with X's run (model, kind, size, n, seed): baseB has no kind, n or size;
    Y has X's source size only when Y copies from A (other runs have none)."""
    if TREATMENTS[y].is_base:
        return model, None, y, None, None, seed
    return model, kind, y, size if TREATMENTS[y].source in ("A", "cross") else None, n, seed


def paired_differences(rows, confidence=CONFIDENCE):
    """Per-seed differences X − Y (`comparisons`) for each (model, kind, source size of X, n), from the
    finished rows with a top-1; seeds where either run is missing are left out. Returns dicts, in order of
    first appearance of X's rows: model, kind, x, y, source_size, n, seeds, top1_pp, rel (per seed, in seed
    order), k (number of seeds), top1_pp_mean, top1_pp_ci, rel_mean, rel_ci (`mean_ci` half-widths; None with
    one seed; rel_* None when a relative accuracy is missing)."""
    done = {(r["model"], r["kind"], r["treatment"], r["source_size"], r["n"], r["seed"]): r for r in rows
            if r.get("status") == "finished" and r.get("top1") is not None}
    out = []
    for x, y in comparisons({r["treatment"] for r in rows}):
        groups = {}
        for (model, kind, t, size, n, seed), row in done.items():
            if t == x:
                partner = done.get(_partner_key(y, model, kind, size, n, seed))
                if partner is not None:
                    groups.setdefault((model, kind, size, n), []).append((seed, row, partner))
        for (model, kind, size, n), pairs in groups.items():
            pairs.sort(key=lambda p: p[0])
            top1_pp = [100 * (a["top1"] - b["top1"]) for _, a, b in pairs]
            rels = [(a.get("relative_accuracy"), b.get("relative_accuracy")) for _, a, b in pairs]
            rel = None if any(u is None or v is None for u, v in rels) else [u - v for u, v in rels]
            entry = {"model": model, "kind": kind, "x": x, "y": y, "source_size": size, "n": n,
                     "seeds": [s for s, _, _ in pairs], "top1_pp": top1_pp, "rel": rel, "k": len(pairs)}
            entry["top1_pp_mean"], entry["top1_pp_ci"] = mean_ci(top1_pp, confidence)
            entry["rel_mean"], entry["rel_ci"] = mean_ci(rel, confidence) if rel else (None, None)
            out.append(entry)
    return out
