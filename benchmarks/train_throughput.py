"""Training throughput: mk_keras vs a PyTorch reference of the same ConvNeXt, one JSON object out.

A full training step (forward, backward, AdamW update) is timed for the mk_keras model (`create_model`,
`freeze_filters`, the `mk_keras.training.recipe` optimizer and compile, `model.fit`) and for the PyTorch model
of `torch_reference.py` (same widths, depths, kernels, stem, norms, exact GELU, layer scale, AdamW without decay
on 0-/1-D weights, label-smoothed cross-entropy) on the same batch size and input size. The trainers run in
turns, `--steps` steps each, for `--rounds` rounds (the order rotates every round), so load from other
processes hits all of them. Reported per trainer: images/s of wall time (median, best, range) and images per
CPU-second of this process. Ratios: the median of the per-round (paired) ratios and the ratio of the best
rounds. On a shared CPU, PyTorch's OpenMP threads wait on each other whenever one core is busy, so wall-time
ratios with 2+ threads favour TensorFlow there; `--threads=1` (both frameworks one thread, CPU-time ratios)
measures the work per step without that effect.

Modes:
  cpu (default): TensorFlow backend, float32; ConvNeXt atto widths at 32 px, batch 128; settings: nothing
    frozen, all depthwise layers frozen, the first half of them frozen. Also the input pipeline's images/s
    (`mk_keras.data`, no model) and the per-run overhead of a sweep run (flags/quickstart.flags narrowed to one
    run, through mk-sweep's code path: data, build, compile, tracing, evaluation, saving) as a share of its
    wall time.
  gpu: JAX backend without importing TensorFlow; ConvNeXt-T, batch 128, 224 px, bfloat16 (Keras
    "mixed_bfloat16", torch autocast); Keras vs torch eager vs torch.compile. Runs on CPU too (tiny sizes).

    python benchmarks/train_throughput.py --out=throughput.json
    python benchmarks/train_throughput.py --mode=gpu --batch=2 --image_size=64 --steps=2 --rounds=1
"""

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FREEZE_SETTINGS = ("none", "depthwise", "half")
FRAMEWORKS = ("keras", "torch_eager", "torch_compile")
TARGETS = {  # issue 8, per mode; checked against the measured medians in "targets"
    "cpu": {"keras_vs_torch_eager/none": 1.2, "keras_frozen_speedup/depthwise": 1.15,
            "input_pipeline_vs_keras_training": 10.0},
    "gpu": {"keras_vs_torch_compile/none": 1.0},
}
MAX_SWEEP_OVERHEAD = 0.10
SWEEP_SELECTION = ("--models=convnext_micro_cifar", "--treatments=baseA")  # one run; --sweep_flags override


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--model", help="registered ConvNeXt V1 name (cpu: convnext_atto_cifar, gpu: convnext_tiny)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image_size", type=int, help="default: 32 for *_cifar models, else 224")
    p.add_argument("--num_classes", type=int, help="default: 10 (cpu), 1000 (gpu)")
    p.add_argument("--steps", type=int, help="timed steps per trainer per round (cpu: 4, gpu: 50)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of --steps steps per trainer first")
    p.add_argument("--freeze", default=None, help=f"comma list of {FREEZE_SETTINGS} (cpu: all, gpu: none)")
    p.add_argument("--frameworks", default=None,
                   help=f"comma list of {FRAMEWORKS} (cpu: keras,torch_eager; gpu: all three)")
    p.add_argument("--steps_per_execution", type=int, default=8, help="Keras; lowered to divide --steps")
    p.add_argument("--threads", type=int, default=0,
                   help="cpu: intra-/inter-op threads of TensorFlow and threads of torch (0: their defaults)")
    p.add_argument("--variants", action="store_true",
                   help="also time Keras variants, unfrozen: steps_per_execution 1 and 32, numpy input instead of "
                        "tf.data, Keras' own GELU and LayerNormalization instead of mk_keras' gelu and LayerNorm, "
                        "keras.optimizers.AdamW instead of mk_keras' AdamW")
    p.add_argument("--check_frozen", action=argparse.BooleanOptionalAction, default=True,
                   help="cpu: profile one Keras call per setting and count the executed depthwise "
                        "filter-gradient ops")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                   help="cpu: time the mk_keras.data input pipeline")
    p.add_argument("--pipeline_batches", type=int, default=200)
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="cpu: run a one-run sweep and time each run's overhead")
    p.add_argument("--sweep_flagfile", default=os.path.join(ROOT, "flags", "quickstart.flags"),
                   help="mk-sweep flagfile of that sweep (also gives the pipeline's data: A's training split)")
    p.add_argument("--sweep_flags", default="",
                   help=f"extra mk-sweep flags, space-separated, after {' '.join(SWEEP_SELECTION)}")
    p.add_argument("--allow_cpu", action="store_true", help="gpu mode: run on CPU when no GPU is visible")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    gpu = args.mode == "gpu"
    args.model = args.model or ("convnext_tiny" if gpu else "convnext_atto_cifar")
    args.image_size = args.image_size or (32 if args.model.endswith("_cifar") else 224)
    args.num_classes = args.num_classes or (1000 if gpu else 10)
    args.steps = args.steps or (50 if gpu else 4)
    args.freeze = (args.freeze or ("none" if gpu else ",".join(FREEZE_SETTINGS))).split(",")
    args.frameworks = (args.frameworks or (",".join(FRAMEWORKS) if gpu else "keras,torch_eager")).split(",")
    for value, allowed in [(f, FREEZE_SETTINGS) for f in args.freeze] + [(f, FRAMEWORKS) for f in args.frameworks]:
        if value not in allowed:
            p.error(f"{value!r} is not one of {allowed}")
    if min(args.batch, args.steps, args.rounds, args.image_size) < 1 or args.warmup < 0:
        p.error("--batch, --steps, --rounds, --image_size must be >= 1 and --warmup >= 0")
    return args


def convnext_config(name):
    """(depths, widths, stem stride) of a registered ConvNeXt V1 model name."""
    from mk_keras.models.convnext import CPU_CONFIGS, MODEL_CONFIGS

    size = name.removeprefix("convnext_").removesuffix("_cifar")
    config = {**MODEL_CONFIGS, **CPU_CONFIGS}.get(size)
    if not name.startswith("convnext_") or config is None:
        raise ValueError(f"--model={name!r}: the PyTorch reference covers ConvNeXt V1 only (convnext_<size>[_cifar])")
    return config["depths"], config["widths"], 2 if name.endswith("_cifar") else 4


def frozen_count(setting, num_depthwise):
    return {"none": 0, "depthwise": num_depthwise, "half": num_depthwise // 2}[setting]


def make_batch(args, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (args.batch, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, args.num_classes, args.batch)
    return x, labels


# --- trainers: each returns (run(steps) -> None, blocking until the steps are done; info dict) ---


def keras_trainer(args, setting, x, labels, spe=None, numpy_input=False, builtin_layers=False, keras_adamw=False):
    """The mk_keras path; `spe`, `numpy_input`, `builtin_layers` (keras.activations.gelu and
    keras.layers.LayerNormalization, autodiff gradients, instead of mk_keras' `gelu` and `LayerNorm`) and
    `keras_adamw` (keras.optimizers.AdamW instead of mk_keras' fused AdamW) make the variants that
    `--variants` compares with it."""
    import keras

    import mk_keras
    from mk_keras.training import recipe

    spe = recipe.divisor_at_most(args.steps, spe or args.steps_per_execution)
    with recipe.precision_policy("mixed_bfloat16" if args.mode == "gpu" else False) as policy:
        model = mk_keras.create_model(args.model, args.num_classes, input_shape=x.shape[1:])
        n = frozen_count(setting, len(mk_keras.filter_layers(model, "depthwise")))
        if n:
            mk_keras.freeze_filters(model, n, kind="depthwise")
        for layer in model.layers if builtin_layers else ():
            if isinstance(layer, keras.layers.Activation) and layer.name.endswith("_gelu"):
                layer.activation = keras.activations.gelu
            elif isinstance(layer, mk_keras.models.layers.LayerNorm):
                layer.__class__ = keras.layers.LayerNormalization  # same weights and config, Keras' call
        optimizer = recipe.make_optimizer(model, recipe.lr_schedule(1e-3, 10**6, 0))
        if keras_adamw:
            optimizer = keras.optimizers.AdamW.from_config(optimizer.get_config())
            optimizer.exclude_from_weight_decay(var_list=recipe.no_decay_variables(model))
        recipe.compile_model(model, optimizer, args.num_classes, label_smoothing=0.1, steps_per_execution=spe)
    y = np.eye(args.num_classes, dtype="float32")[labels]
    if args.mode == "cpu" and not numpy_input:
        import tensorflow as tf

        # tf.data autotuning off: this stream has nothing to tune, and with it on, destroying the iterator at
        # the end of each timed `fit` waits for the autotune thread's next wake-up (10 ms, doubling), which
        # pinned some rounds at 1.27 s or 2.55 s of wall time.
        options = tf.data.Options()
        options.autotune.enabled = False
        data = tf.data.Dataset.from_tensors((x, y)).repeat().with_options(options)
    elif args.mode == "cpu":  # numpy arrays of one round's batches: Keras slices and converts them every step
        data = None
        xs, ys = np.tile(x, (args.steps, 1, 1, 1)), np.tile(y, (args.steps, 1))
    else:
        import jax

        xd, yd = jax.device_put(x), jax.device_put(y)

        def batches():  # the same on-device batch, as the torch trainers use
            while True:
                yield xd, yd

        data = batches()

    def run(steps):
        if data is None:
            model.fit(xs[: steps * args.batch], ys[: steps * args.batch], batch_size=args.batch, epochs=1,
                      shuffle=False, verbose=0)
        else:
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
        if args.mode == "gpu":
            import jax

            jax.block_until_ready([v.value for v in model.trainable_variables])

    info = {
        "backend": keras.backend.backend(),
        "policy": policy,
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": spe,
        "input": "numpy" if numpy_input else ("tf.data" if args.mode == "cpu" else "on-device arrays"),
        "frozen_depthwise_layers": n,
        "trainable_tensors": len(model.trainable_variables),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "_model": model,
    }
    return run, info


def torch_trainer(args, setting, x, labels, compiled):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, HERE)
    import torch_reference

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # autotuned convolutions, as XLA autotunes them for JAX
    depths, widths, stem = convnext_config(args.model)
    model = torch_reference.ConvNeXt(depths, widths, args.num_classes, 3, stem).to(device)
    bf16 = args.mode == "gpu"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    n = frozen_count(setting, len(model.depthwise_convs()))
    torch_reference.freeze_depthwise(model, n)
    optimizer = torch_reference.make_optimizer(model, 1e-3, fused=device.type == "cuda")
    net = torch.compile(model) if compiled else model
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
    xt = xt.contiguous(memory_format=torch.channels_last if bf16 else torch.contiguous_format)
    yt = torch.from_numpy(labels).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(xt), yt, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run(steps):
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    trainable = [p for p in model.parameters() if p.requires_grad]
    info = {
        "device": str(device),
        "precision": "autocast bfloat16" if bf16 else "float32",
        "memory_format": "channels_last" if bf16 else "contiguous (NCHW)",
        "threads": torch.get_num_threads(),
        "frozen_depthwise_layers": n,
        "trainable_tensors": len(trainable),
        "trainable_params": int(sum(p.numel() for p in trainable)),
    }
    return run, info


# --- timing ---


def alternate(runners, steps, rounds, warmup, batch):
    """Per runner and round: images/s of wall time and images per CPU-second of this process. Runners take
    turns, the order rotating every round."""
    for run in runners.values():
        for _ in range(warmup):
            run(steps)
    names = list(runners)
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            runners[name](steps)
            wall[name].append(steps * batch / (time.perf_counter() - start))
            cpu[name].append(steps * batch / (time.process_time() - start_cpu))
    return wall, cpu


def summary(values):
    med = statistics.median(values)
    return {
        "median": round(med, 3),
        "best": round(max(values), 3),
        "min": round(min(values), 3),
        "spread_pct": round(100 * (max(values) - min(values)) / med, 1),
        "rounds": [round(v, 3) for v in values],
    }


def paired(numerator, denominator):
    """Per-round ratios (both measured in the same round): median, range, and the ratio of the best rounds."""
    out = summary([a / b for a, b in zip(numerator, denominator)])
    del out["best"]
    return {**out, "of_best_rounds": round(max(numerator) / max(denominator), 3)}


def executed_ops_per_step(run, steps, op_type):
    """Executions of TF ops whose type contains `op_type` per step, from a profiler trace of `run(steps)`."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            run(steps)
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    count = 0
    for plane in space.planes:
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                count += sum(op_type in plane.event_metadata[e.metadata_id].name.rpartition(":")[2]
                             for e in line.events)
    return count / steps


# --- input pipeline and sweep overhead (cpu mode) ---


def sweep_config(args, output_dir):
    """The `SweepConfig` of `--sweep_flagfile` (mk-sweep's own flag parsing), narrowed by `SWEEP_SELECTION`
    and `--sweep_flags`."""
    from absl import flags

    from mk_keras.cli import sweep as sweep_cli

    fv = flags.FlagValues()
    _, training_names = sweep_cli.define_flags(fv)
    fv(["mk-sweep", f"--flagfile={args.sweep_flagfile}", *SWEEP_SELECTION, *args.sweep_flags.split(),
        f"--output_dir={output_dir}", "--verbose=0"])
    return sweep_cli.config_from_flags(fv, training_names)


def pipeline_throughput(args, config):
    """images/s of `mk_keras.data.make_pipeline` (training, batch `--batch`) on the sweep's data A, after one
    warm-up epoch that fills the cache."""
    from mk_keras import data

    loaded = data.load(config.dataset_a, split="train", classes=config.classes_a,
                       max_per_class=config.train_args["max_per_class"])
    augment = config.train_args["augment"] or "basic"
    pipe = data.make_pipeline(loaded, batch_size=args.batch, image_size=(args.image_size, args.image_size),
                              channels=3, training=True, augment=augment, drop_remainder=True)
    batches = iter(pipe.repeat())
    for _ in range(loaded.info.num_examples // args.batch):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.pipeline_batches):
        images, _ = next(batches)
        images.numpy()
    elapsed = time.perf_counter() - start
    return {
        "dataset": config.dataset_a, "classes": config.classes_a, "examples": loaded.info.num_examples,
        "augment": augment, "batch_size": args.batch, "batches_timed": args.pipeline_batches,
        "images_per_s": round(args.pipeline_batches * args.batch / elapsed, 1),
    }


def sweep_overhead(config, output_dir):
    """Run the sweep `config` through mk-sweep's code path, timing each `train` call against its steady-state
    training time (steps x median step time); the rest is per-run overhead (data, build, compile, tracing,
    evaluation, saving)."""
    import keras

    from mk_keras.cli import sweep as sweep_cli
    from mk_keras.training import train

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.calls, self.evals, self.marks = [], [], {}

        def on_train_begin(self, logs=None):
            self.marks.setdefault("fit_begin", time.perf_counter())

        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.calls.append(time.perf_counter() - self.t)

        def on_test_begin(self, logs=None):
            self.t_eval = time.perf_counter()

        def on_test_end(self, logs=None):
            self.evals.append(time.perf_counter() - self.t_eval)

        def on_train_end(self, logs=None):
            self.marks["fit_end"] = time.perf_counter()

    runs = []

    def timed_train(**kwargs):
        timer, start = Timer(), time.perf_counter()
        metrics = train(**kwargs, callbacks=[timer])
        total = time.perf_counter() - start
        spe, steps = metrics["recipe"]["steps_per_execution"], metrics["recipe"]["total_steps"]
        step_s = statistics.median(timer.calls[1:] or timer.calls) / spe
        runs.append({
            "run": os.path.basename(kwargs["run_dir"]), "steps": steps, "steps_per_execution": spe,
            "run_s": round(total, 2),
            "steady_step_s": round(step_s, 4),
            "steady_training_s": round(steps * step_s, 2),
            "setup_s": round(timer.marks["fit_begin"] - start, 2),
            "first_call_extra_s": round(timer.calls[0] - step_s * spe, 2),
            "validation_s": round(sum(timer.evals), 2),
            "after_fit_s": round(start + total - timer.marks["fit_end"], 2),
            "overhead_share": round(1 - steps * step_s / total, 3),
        })
        return metrics

    start = time.perf_counter()
    sweep_cli.run(config, output_dir, train_fn=timed_train, log=lambda *a, **k: None)
    total = time.perf_counter() - start
    return {
        "models": config.models, "treatments": config.treatments, "dataset": config.dataset_a,
        "classes": config.classes_a, "train_args": {k: config.train_args[k] for k in (
            "epochs", "batch_size", "max_per_class", "eval_max_per_class", "eval_every", "steps_per_execution")},
        "runs": runs,
        "sweep_s": round(total, 2),
        "overhead_share_per_run": round(statistics.mean(r["overhead_share"] for r in runs), 3),
        "overhead_share_of_sweep": round(1 - sum(r["steady_training_s"] for r in runs) / total, 3),
    }


# --- report ---


def environment(args):
    import keras

    env = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }
    if args.mode == "cpu":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
        env["onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    else:
        import jax

        env["jax"] = jax.__version__
        env["jax_devices"] = [str(d) for d in jax.devices()]
    if any(f.startswith("torch") for f in args.frameworks):
        import torch

        env["torch"] = torch.__version__
        env["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return env


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def ratios(samples, args):
    """Paired ratios of `samples` ({runner: per-round values}): Keras vs torch, frozen vs unfrozen, variants."""
    out = {}
    for setting in args.freeze:
        keras_ = samples.get(f"keras/{setting}")
        for fw in ("torch_eager", "torch_compile"):
            if keras_ and f"{fw}/{setting}" in samples:
                out[f"keras_vs_{fw}/{setting}"] = paired(keras_, samples[f"{fw}/{setting}"])
    for fw in args.frameworks:
        for setting in args.freeze:
            if setting != "none" and f"{fw}/none" in samples and f"{fw}/{setting}" in samples:
                out[f"{fw}_frozen_speedup/{setting}"] = paired(samples[f"{fw}/{setting}"], samples[f"{fw}/none"])
    for name in samples:
        if name.startswith("keras_variant/") and "keras/none" in samples:
            out[f"{name}_vs_default"] = paired(samples[name], samples["keras/none"])
    return out


def run(args):
    """Measure everything `args` asks for; returns the result dict."""
    if args.mode == "cpu":
        os.environ["KERAS_BACKEND"] = "tensorflow"
        if args.threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
            if any(fw.startswith("torch") for fw in args.frameworks):
                import torch

                torch.set_num_threads(args.threads)
    else:
        os.environ["KERAS_BACKEND"] = "jax"
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch too
        import jax

        if jax.default_backend() == "cpu" and not args.allow_cpu:
            raise SystemExit("gpu mode: JAX sees no GPU; pass --allow_cpu to run it on CPU anyway")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    result = {"mode": args.mode, "model": args.model, "batch_size": args.batch, "image_size": args.image_size,
              "num_classes": args.num_classes, "steps_per_round": args.steps, "rounds": args.rounds,
              "threads": args.threads or "framework defaults",
              "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
              "environment": environment(args)}
    x, labels = make_batch(args)
    runners, info = {}, {}
    for setting in args.freeze:
        for fw in args.frameworks:
            if fw == "keras":
                fn, meta = keras_trainer(args, setting, x, labels)
            else:
                fn, meta = torch_trainer(args, setting, x, labels, compiled=fw == "torch_compile")
            runners[f"{fw}/{setting}"], info[f"{fw}/{setting}"] = fn, meta
    if args.variants and "keras" in args.frameworks:
        from mk_keras.training.recipe import divisor_at_most

        default_spe = divisor_at_most(args.steps, args.steps_per_execution)
        spes = {f"spe{k}": {"spe": k} for k in {divisor_at_most(args.steps, k) for k in (1, 32)} - {default_spe}}
        for name, kw in (*spes.items(), ("numpy_input", {"numpy_input": True}),
                         ("builtin_layers", {"builtin_layers": True}), ("keras_adamw", {"keras_adamw": True})):
            runners[f"keras_variant/{name}"], info[f"keras_variant/{name}"] = keras_trainer(
                args, "none", x, labels, **kw)
    wall, cpu = alternate(runners, args.steps, args.rounds, args.warmup, args.batch)
    models = {name: meta.pop("_model", None) for name, meta in info.items()}
    result["throughput"] = {name: {"images_per_s": summary(wall[name]), "images_per_cpu_s": summary(cpu[name]),
                                   **info[name]} for name in wall}
    result["ratios"] = ratios(wall, args)
    result["cpu_time_ratios"] = ratios(cpu, args)

    if args.mode == "cpu" and args.check_frozen and "keras" in args.frameworks:
        result["frozen_check"] = {
            setting: {
                "trainable_tensors": info[f"keras/{setting}"]["trainable_tensors"],
                "gradients_per_step": len(models[f"keras/{setting}"].trainable_variables),
                "executed_depthwise_filter_grads_per_step": executed_ops_per_step(
                    runners[f"keras/{setting}"], info[f"keras/{setting}"]["steps_per_execution"],
                    "DepthwiseConv2dNativeBackpropFilter"),
            }
            for setting in args.freeze
        }
    if args.mode == "cpu" and (args.pipeline or args.sweep):
        with tempfile.TemporaryDirectory() as tmp:
            config = sweep_config(args, tmp)
            if args.pipeline:
                result["input_pipeline"] = pipeline_throughput(args, config)
            if args.sweep:
                result["sweep_overhead"] = {
                    "flagfile": os.path.relpath(args.sweep_flagfile, ROOT),
                    "flags": [*SWEEP_SELECTION, *args.sweep_flags.split()], **sweep_overhead(config, tmp)}
    result["environment"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = targets(result)
    if args.mode == "gpu":
        result["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    return result


def targets(result):
    found = {**result["ratios"]}
    keras_train = result["throughput"].get("keras/none", {}).get("images_per_s", {}).get("median")
    if "input_pipeline" in result and keras_train:
        found["input_pipeline_vs_keras_training"] = {
            "median": round(result["input_pipeline"]["images_per_s"] / keras_train, 2)}
    out = {name: {"target": f">= {t}", "measured": found[name]["median"], "met": found[name]["median"] >= t}
           for name, t in TARGETS[result["mode"]].items() if name in found}
    if "sweep_overhead" in result:
        share = result["sweep_overhead"]["overhead_share_per_run"]
        out["sweep_overhead_share"] = {"target": f"<= {MAX_SWEEP_OVERHEAD}", "measured": share,
                                       "met": share <= MAX_SWEEP_OVERHEAD}
    return out


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
