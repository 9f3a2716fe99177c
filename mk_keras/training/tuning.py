"""Hyper-parameter search with keras-tuner: learning rate, weight decay and label smoothing, each trial a
full `train(...)` run; the best values are written as a flagfile that mk-train / mk-transfer accept.

Trials evaluate on a held-out part of the training split (`holdout`), never on the test split.
"""

import json
import math
import os

SEARCHED = ("lr", "weight_decay", "label_smoothing")
TUNERS = ("random", "bayesian")
DEFAULT_RANGES = {"lr": (1e-4, 4e-3), "weight_decay": (0.005, 0.2), "label_smoothing": (0.0, 0.2)}


def _check_range(name, bounds):
    if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1] or not all(math.isfinite(b) for b in bounds):
        raise ValueError(f"{name} range {tuple(bounds)!r} must be two numbers 0 <= low < high")
    if name == "label_smoothing" and bounds[1] >= 1:
        raise ValueError(f"label_smoothing range {tuple(bounds)!r} must stay below 1")
    return float(bounds[0]), float(bounds[1])


def tune(*, run_dir, max_trials=10, tuner="random", ranges=None, output=None, overwrite=False, holdout=0.1,
         **train_kwargs):
    """Search `ranges` ({name: (low, high)} for lr, weight_decay, label_smoothing; log-uniform when
    low > 0) over `max_trials` `train(**train_kwargs)` runs in `run_dir/trials/<id>` (a rerun trial replaces
    its directory), maximising held-out top-1 (`holdout` fraction of the training split).

    Writes `output` (default `run_dir/best.flags`: `--lr=...`, `--weight_decay=...`, `--label_smoothing=...`)
    and `run_dir/tuning.json` (every trial). Returns the tuning summary dict. A rerun without `overwrite`
    continues the search (keras-tuner state in `run_dir/tuner`).
    """
    import keras_tuner as kt

    from mk_keras.training.run import TrainingFailed, train

    if tuner not in TUNERS:
        raise ValueError(f"tuner={tuner!r}; allowed: {', '.join(TUNERS)}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials={max_trials!r} must be a positive integer")
    if not 0 < holdout <= 0.5:
        raise ValueError(f"holdout={holdout!r} must be in (0, 0.5]: tuning never evaluates on the test split")
    unknown = set(ranges or {}) - set(SEARCHED)
    if unknown:
        raise ValueError(f"cannot tune {sorted(unknown)}; allowed: {', '.join(SEARCHED)}")
    bounds = {k: _check_range(k, v) for k, v in {**DEFAULT_RANGES, **(ranges or {})}.items()}
    clash = set(SEARCHED) & set(train_kwargs)
    if clash:
        raise ValueError(f"{sorted(clash)} are searched; set their ranges instead")
    os.makedirs(run_dir, exist_ok=True)

    def hp_values(hp):
        return {name: hp.Float(name, lo, hi, sampling="log" if lo > 0 else "linear")
                for name, (lo, hi) in bounds.items()}

    class _Search(kt.RandomSearch if tuner == "random" else kt.BayesianOptimization):
        def run_trial(self, trial, *args, **kwargs):
            values = hp_values(trial.hyperparameters)
            trial_dir = os.path.join(run_dir, "trials", trial.trial_id)
            try:
                metrics = train(run_dir=trial_dir, holdout=holdout, overwrite=True, **values, **train_kwargs)
                return {"val_top1": metrics["top1"]}
            except TrainingFailed:  # NaN loss: the worst score, the search goes on
                return {"val_top1": 0.0}

    search = _Search(objective=kt.Objective("val_top1", "max"), max_trials=max_trials,
                     seed=train_kwargs.get("seed", 0), directory=run_dir, project_name="tuner", overwrite=overwrite)
    search.search()
    best_trial = search.oracle.get_best_trials(1)[0]
    best = {name: best_trial.hyperparameters.get(name) for name in bounds}
    score = best_trial.score
    output = output or os.path.join(run_dir, "best.flags")
    header = (f"# mk-tune: best of {len(search.oracle.trials)} trials, held-out top-1 {score:.4f} "
              f"(trial {best_trial.trial_id}); model={train_kwargs.get('model')} "
              f"dataset={train_kwargs.get('dataset')} batch_size={train_kwargs.get('batch_size')}\n")
    with open(output, "w") as f:
        f.write(header + "".join(f"--{name}={value!r}\n" for name, value in best.items()))
    summary = {"best": best, "best_val_top1": score, "best_trial": best_trial.trial_id, "flagfile": output,
               "ranges": bounds, "tuner": tuner, "max_trials": max_trials, "holdout": holdout,
               "trials": [{"trial": t.trial_id, **t.hyperparameters.values, "val_top1": t.score,
                           "status": t.status, "run_dir": os.path.join(run_dir, "trials", t.trial_id)}
                          for t in search.oracle.trials.values()]}
    with open(os.path.join(run_dir, "tuning.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
