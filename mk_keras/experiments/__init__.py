"""Transfer sweeps: treatments x models x depths x seeds, resumable and shardable, with merged results,
figures and a markdown report (see docs/sweeps.md).

    from mk_keras.experiments import SweepConfig, run_sweep
    rows = run_sweep(SweepConfig(...), "runs/my_sweep")
"""

from mk_keras.experiments.results import COLUMNS, add_relative_accuracy, merge, summarize
from mk_keras.experiments.sweep import Plan, Run, SweepConfig, plan, run_sweep
from mk_keras.experiments.treatments import TREATMENTS, Treatment

__all__ = ["COLUMNS", "Plan", "Run", "SweepConfig", "TREATMENTS", "Treatment", "add_relative_accuracy", "merge",
           "plan", "run_sweep", "summarize"]
