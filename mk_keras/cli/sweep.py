"""mk-sweep: transfer sweeps (treatments x models x depths x seeds) with merged tables, figures and a report.

    mk-sweep --flagfile=flags/quickstart.flags                      # the README's main job (CPU, minutes)
    mk-sweep --flagfile=flags/paper/imagenet_resnet.flags --num_shards=8 --shard_index=$SLURM_ARRAY_TASK_ID
    mk-sweep --output_dir=runs/quickstart --merge_only              # rebuild results/report from result files
    mk-sweep --flagfile=flags/quickstart.flags --dry_run            # print the planned runs
    mk-sweep --flagfile=flags/paper/imagenet_convnext.flags --smoke   # every arm and treatment, 2 steps, synthetic
    mk-sweep --flagfile=flags/paper/cross_domain_imagenet_food101.flags   # base A: keras:ConvNeXtTiny:imagenet

Rerunning a command resumes it: finished runs are skipped, an interrupted one resumes from its checkpoint.
A rerun with more seeds, models, depths, source sizes or treatments adds their runs; sweep.json and the tables
keep every run planned in the directory (other data, training flags, --name or backend are refused).
Shards share --output_dir; run i belongs to shard i % num_shards (see docs/sweeps.md). The output directory
holds flags.txt (this command's flags, shard flags left out), sweep.json, runs/, results/, results.csv,
results.jsonl, report.md and figures/. --smoke runs the sweep's smoke version (mk_keras.experiments.smoke: synthetic
data of the same shapes and class counts, 2 steps per run, one depth per treatment) into <output_dir>/smoke, prints
PASS/FAIL per run and exits 1 if any failed.
"""

import functools
import os
import sys

from absl import flags

from mk_keras.cli import common

PROG = "mk-sweep"
# train() flags the sweep sets per run (or, for --seed, lists as --seeds).
_PER_RUN = ("model", "dataset", "classes", "run_dir", "seed", "init_seed", "data_seed", "overwrite")
# Flags that say how this process takes part, not what the sweep is: left out of flags.txt.
_NOT_STORED = ("shard_index", "num_shards", "merge_only", "dry_run", "smoke")
SMOKE_DIR = "smoke"


def define_flags(fv):
    """Define mk-sweep's flags on `fv`; returns (sweep flag names, training flag names)."""
    from mk_keras.experiments.treatments import TREATMENTS
    from mk_keras.transfer import CHANNEL_MAPS, KERNEL_MAPS

    d = flags
    d.DEFINE_string("name", "sweep", "Experiment name (the 'experiment' column).", flag_values=fv)
    d.DEFINE_string("output_dir", None, "Sweep directory shared by all shards (default: runs/<name>).",
                    flag_values=fv)
    d.DEFINE_string("dataset_a", "fashion_mnist", "Dataset spec of A (the source task).", flag_values=fv)
    d.DEFINE_list("classes_a", None, "Class selection of A: a named split (fashion_garments, "
                  "imagenet_manmade, random_half:A:0, ...) or class indices/names.", flag_values=fv)
    d.DEFINE_string("dataset_b", None, "Dataset spec of B (default: --dataset_a, split by --classes_b).",
                    flag_values=fv)
    d.DEFINE_list("classes_b", None, "Class selection of B.", flag_values=fv)
    d.DEFINE_list("models", ["convnext_micro_cifar"], "Registered model names (a model may repeat with "
                  "another kind).", flag_values=fv)
    d.DEFINE_list("kinds", ["auto"], "Filter kind per model (depthwise, pointwise, conv, auto = depthwise "
                  "when the model has depthwise layers, else conv); one for all or one per model.", flag_values=fv)
    d.DEFINE_list("depths", ["all"], "Transfer depths n: integers, 'all' (1..L), 'last' (L) and/or 'spread:K' "
                  "(K depths evenly spaced over 1..L).", flag_values=fv)
    d.DEFINE_list("treatments", ["baseA", "baseB", "AnB", "BnB"], f"Treatments: {', '.join(TREATMENTS)}.",
                  flag_values=fv)
    d.DEFINE_list("seeds", ["0"], "Seeds; each gets its own base models.", flag_values=fv)
    d.DEFINE_list("source_sizes", [], "Larger-source experiment: examples per class of A, one baseA (and its "
                  "transfers) per value.", flag_values=fv)
    d.DEFINE_string("cross_source", None, "Source architecture of the 'cross' treatment (its baseA).",
                    flag_values=fv)
    d.DEFINE_enum("cross_kernel_map", "auto", [*KERNEL_MAPS, "none"], "Kernel size mapping for 'cross'.",
                  flag_values=fv)
    d.DEFINE_enum("cross_channel_map", "auto", [*CHANNEL_MAPS, "none"], "Channel mapping for 'cross'.",
                  flag_values=fv)
    d.DEFINE_list("base_a_source", [], "External base A instead of a trained baseA run, one for all models or one "
                  "per model (train: the sweep trains that model's baseA): a PyTorch checkpoint "
                  "<model>:<PATH>.pth|.pt|.bin|.safetensors, keras:<Application>:imagenet|PATH.weights.h5, a .keras "
                  "file or a run directory of that model (docs/pretrained.md).", flag_values=fv)
    d.DEFINE_integer("shard_index", 0, "This process's shard (0..num_shards-1), e.g. $SLURM_ARRAY_TASK_ID.",
                     lower_bound=0, flag_values=fv)
    d.DEFINE_integer("num_shards", 1, "Number of shards sharing --output_dir.", lower_bound=1, flag_values=fv)
    d.DEFINE_boolean("merge_only", False, "Only rebuild results.csv/jsonl, figures and report.md from the "
                     "result files in --output_dir (its sweep.json defines the runs).", flag_values=fv)
    d.DEFINE_boolean("dry_run", False, "Print the planned runs and their shards; train nothing.", flag_values=fv)
    d.DEFINE_boolean("smoke", False, "Check the sweep before booking GPU time: every arm and treatment (one depth) "
                     "for 2 steps on synthetic data of the same image shapes and class counts, into "
                     "<output_dir>/smoke (replaced each time); PASS/FAIL per run, exit status 1 if any failed.",
                     flag_values=fv)
    d.DEFINE_float("lock_stale_s", 900.0, "A run lock not refreshed for this many seconds (its holder was "
                   "killed on another machine) is taken over.", lower_bound=1.0, flag_values=fv)
    d.DEFINE_integer("eval_max_per_class_a", None, "Evaluation examples per class for runs on A (baseA) when A's "
                     "test split has fewer than --eval_max_per_class (0: all; unset: as for B).", lower_bound=0,
                     flag_values=fv)
    d.DEFINE_string("store", None, "Run store shared by sweeps: runs live in STORE/<spec hash>/ and a run already "
                    "finished there is reused, not retrained (docs/cluster.md).", flag_values=fv)
    names = ["name", "output_dir", "dataset_a", "classes_a", "dataset_b", "classes_b", "models", "kinds", "depths",
             "treatments", "seeds", "source_sizes", "cross_source", "cross_kernel_map", "cross_channel_map",
             "base_a_source", "shard_index", "num_shards", "merge_only", "dry_run", "smoke", "lock_stale_s",
             "eval_max_per_class_a", "store"]
    return names, common.define_training_flags(fv, exclude=_PER_RUN)


def _ints(values, flag):
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{flag}={','.join(values)}: expected integers") from None


def config_from_flags(fv, training_names):
    """A `SweepConfig` from parsed flags."""
    from mk_keras.experiments import SweepConfig

    train_args = common.training_kwargs(fv, training_names)
    if train_args.get("verbose") is None:
        train_args["verbose"] = 1 if sys.stdout.isatty() else 0
    return SweepConfig(
        name=fv.name, dataset_a=fv.dataset_a, classes_a=common.parse_classes(fv.classes_a), dataset_b=fv.dataset_b,
        classes_b=common.parse_classes(fv.classes_b), models=fv.models, kinds=fv.kinds, depths=fv.depths,
        treatments=fv.treatments, seeds=_ints(fv.seeds, "seeds"), source_sizes=_ints(fv.source_sizes, "source_sizes"),
        cross_source=fv.cross_source, cross_kernel_map=None if fv.cross_kernel_map == "none" else fv.cross_kernel_map,
        cross_channel_map=None if fv.cross_channel_map == "none" else fv.cross_channel_map,
        base_a_source=fv.base_a_source, train_args=train_args, eval_max_per_class_a=fv.eval_max_per_class_a,
        store=fv.store,
    )


def run(config, output_dir, shard_index=0, num_shards=1, merge_only=False, dry_run=False, flags_text=None,
        lock_stale_s=900.0, train_fn=None, log=None, smoke=False):
    """Plan (dry_run), merge (merge_only), smoke-test (smoke: into output_dir/smoke) or run one shard of the sweep
    `config` into `output_dir`; returns the plan (dry_run), whether every smoke run passed, or the merged rows."""
    from mk_keras.experiments import plan, results, run_sweep

    log = log or functools.partial(print, flush=True)
    if smoke:
        conflicts = [f for f, on in (("--merge_only", merge_only), ("--dry_run", dry_run),
                                     ("--num_shards", num_shards > 1)) if on]
        if conflicts:
            raise ValueError(f"--smoke runs the whole smoke sweep in one process; it does not combine with "
                             f"{conflicts[0]}")
        from mk_keras.experiments.smoke import run_smoke

        return run_smoke(config, os.path.join(output_dir, SMOKE_DIR), train_fn=train_fn,
                         flags_text=None if flags_text is None else flags_text + "--smoke\n", log=log)
    if merge_only:
        rows = results.merge(output_dir, lock_stale_s=lock_stale_s)
        definition = results.load_definition(output_dir)
        done = sum(r["status"] == "finished" for r in rows)
        log(f"{PROG}: merged {len(rows)} of {len(definition['runs'])} runs ({done} finished) -> "
            f"{os.path.join(output_dir, 'report.md')}")
        return rows
    if dry_run:
        the_plan = plan(config)
        for i, r in enumerate(the_plan.runs):
            log(f"{i:4d} shard {i % num_shards}  {r.run_id}" + (f"  <- {r.source}" if r.source else ""))
        for model, spec in the_plan.external_sources().items():
            log(f"base A of {model}: {spec} (converted into <output_dir>/sources/{model}.keras, not trained)")
        log(f"{PROG}: {len(the_plan.runs)} runs planned for {config.name!r} (nothing trained)")
        return the_plan
    return run_sweep(config, output_dir, shard_index=shard_index, num_shards=num_shards, train_fn=train_fn,
                     flags_text=flags_text, log=log, lock_stale_s=lock_stale_s)


def main(argv, train_fn=None):
    """Parse `argv` (argv[0] is the program name) and run; returns the exit status."""
    names = {}

    def define(fv):
        names["sweep"], names["training"] = define_flags(fv)

    def call(fv):
        output_dir = fv.output_dir or os.path.join("runs", fv.name)
        stored = [n for n in names["sweep"] if n not in _NOT_STORED] + names["training"]
        config = None if fv.merge_only else config_from_flags(fv, names["training"])
        passed = run(config, output_dir, fv.shard_index, fv.num_shards, fv.merge_only, fv.dry_run,
                     flags_text=common.flagfile_text(fv, stored, PROG), lock_stale_s=fv.lock_stale_s,
                     train_fn=train_fn, smoke=fv.smoke)
        if fv.smoke and not passed:
            from mk_keras.training import TrainingFailed

            raise TrainingFailed(f"smoke test of {fv.name!r} failed (see the FAIL lines above)")

    return common.execute(PROG, define, call, argv)


def main_entry():
    common.select_backend(sys.argv, "mk_keras.cli.sweep")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
