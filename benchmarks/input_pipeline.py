"""Input pipeline at ImageNet scale: mk_keras (`make_pipeline(transforms="imagenet")`) against a torchvision DataLoader.

Builds (once, cached under --data) a synthetic ImageNet-like JPEG folder: 1000 classes, photos that
scikit-image ships, randomly cropped and resized to ImageNet's typical sizes (about 400x350, quality 95, with
a little sensor-like noise so files weigh about what ImageNet's do). Then, at 224 px, times the full training
transform on both sides with the same number of workers, in alternating rounds, each side in a fresh
subprocess (torchvision cannot be imported after TensorFlow in one process):

- mk_keras: fused JPEG decode + random-resized crop, flip, RandAugment (timm rand-m9-mstd0.5-inc1), random
  erasing 0.25; tf.data with `--workers` threads (private thread pool) and one intra-op thread.
- torchvision: ImageFolder + RandomResizedCrop, RandomHorizontalFlip, RandAugment, ToTensor, RandomErasing(0.25)
  in a DataLoader with `--workers` processes. RandAugment is timm's rand-m9-mstd0.5-inc1 (the ConvNeXt
  recipe's, what mk_keras implements) and, as a second configuration, torchvision's RandAugment(2, 9) with 11
  magnitude bins (9 of 10 as timm's scale; torchvision's default 31 bins would make magnitude 9 a weak 0.3).
  Both sides resize bicubic (ConvNeXt's setting); geometric RandAugment ops bilinear.

Images per second per core = images/s / workers; also images per CPU-second of the whole process tree.
Then peak RSS of the mk_keras training stream over folders of two sizes (hard links to the same files), each
in a fresh subprocess. One JSON object on stdout (and --out).

    python benchmarks/input_pipeline.py                      # ~5 min on 2 cores
    python benchmarks/input_pipeline.py --quick              # seconds of timing, tiny folder
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

H100_IMAGES_PER_S = 3700  # ConvNeXt-T training step, one H100 (docs/performance.md)
SIZE = 224


# --- synthetic ImageNet-like folder --------------------------------------------------------------------------


def _photos():
    import numpy as np
    from skimage import data as sk

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
             "colorwheel", "camera", "coins", "moon", "clock", "grass", "gravel", "brick", "page", "text"]
    out = []
    for name in names:
        x = np.asarray(getattr(sk, name)())
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, -1)
        out.append(x[..., :3].astype(np.uint8))
    return out


def build_folder(root, num_images, classes=1000, seed=0):
    """root/train/nXXXXX/*.JPEG: `num_images` images over `classes` classes; reused when already there."""
    import numpy as np
    from PIL import Image

    done = os.path.join(root, f"done_{num_images}_{classes}")
    if os.path.isfile(done):
        return
    rng = np.random.default_rng(seed)
    photos = _photos()
    for i in range(num_images):
        src = photos[rng.integers(len(photos))]
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
        y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        width = int(np.clip(rng.normal(400, 60), 250, 500))
        height = int(np.clip(width * rng.uniform(0.65, 1.1), 200, 500))
        img = Image.fromarray(src[y:y + ch, x:x + cw]).resize((width, height), Image.BICUBIC)
        noisy = np.asarray(img, np.float32) + rng.normal(0, 24, (height, width, 3))
        folder = os.path.join(root, "train", f"n{i % classes:05d}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:07d}.JPEG"),
                                                                         quality=95)
    open(done, "w").close()


def linked_folder(src_root, dst_root, num_images):
    """dst_root/train/...: `num_images` hard links cycling over the files of src_root (no extra disk)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(src_root, "train")) for f in fs)
    done = os.path.join(dst_root, f"done_{num_images}")
    if os.path.isfile(done):
        return
    for i in range(num_images):
        f = files[i % len(files)]
        folder = os.path.join(dst_root, "train", os.path.basename(os.path.dirname(f)))
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, f"{i:07d}.JPEG")
        if not os.path.exists(target):
            os.link(f, target)
    open(done, "w").close()


def folder_stats(root):
    import numpy as np

    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(root, "train")) for f in fs]
    return {"images": len(sizes), "mean_kb": round(float(np.mean(sizes)) / 1024, 1)}


# --- one measurement per subprocess ----------------------------------------------------------------------------


def _cpu_s():
    """CPU seconds of this process and its live child processes (DataLoader workers), from /proc."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    total, tick = me.ru_utime + me.ru_stime, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1] = ppid; utime, stime = fields[11], fields[12]
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _time(batches, n_warm, n_timed, size):
    """Images/s and images per CPU-second over `n_timed` batches after `n_warm` (iterator already made)."""
    for _ in range(n_warm):
        next(batches)
    cpu, wall = _cpu_s(), time.perf_counter()
    for _ in range(n_timed):
        next(batches)
    wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
    return {"images_per_s": n_timed * size / wall, "images_per_cpu_s": n_timed * size / cpu, "wall_s": wall}


def run_mk(root, workers, batch, n_warm, n_timed, image_size, cache=None):
    import tensorflow as tf

    from mk_keras import data
    from mk_keras.data import streaming

    start = time.perf_counter()
    loaded = data.load(f"folder:{root}", split="train")
    load_s = time.perf_counter() - start
    pipe = data.make_pipeline(loaded, batch_size=batch, image_size=(image_size, image_size), training=True,
                              augment="randaugment", erase_prob=0.25, repeat=True, transforms="imagenet",
                              cache=cache)
    options = tf.data.Options()
    options.threading.private_threadpool_size = workers
    options.threading.max_intra_op_parallelism = 1
    it = iter(pipe.with_options(options).map(lambda x, y: tf.reduce_sum(x)))  # consume the batch on the host
    out = _time(it, n_warm, n_timed, batch)
    cached, estimate = streaming.plan_cache(loaded, True, (image_size, image_size), 3, cache)
    out.update(load_s=round(load_s, 1), cached=cached, estimated_decoded_gb=round(estimate / 1e9, 2),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return out


def run_torchvision(root, workers, batch, n_warm, n_timed, image_size, randaugment):
    import torch
    from torchvision import datasets, transforms as tv

    torch.set_num_threads(1)
    bicubic, bilinear = tv.InterpolationMode.BICUBIC, tv.InterpolationMode.BILINEAR
    if randaugment == "timm":
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        ra = rand_augment_transform("rand-m9-mstd0.5-inc1", {"translate_const": int(image_size * 0.45),
                                                             "img_mean": (124, 116, 104),
                                                             "interpolation": Image.BILINEAR,
                                                             # this Pillow refuses posterize(0 bits), which timm
                                                             # reaches at magnitude 10 (~2 % of draws)
                                                             "magnitude_max": 9.99})
    else:
        ra = tv.RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11, interpolation=bilinear)
    transform = tv.Compose([tv.RandomResizedCrop(image_size, interpolation=bicubic), tv.RandomHorizontalFlip(), ra,
                            tv.ToTensor(), tv.RandomErasing(p=0.25, value="random")])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(os.path.join(root, "train"), transform=transform),
                                         batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=True, prefetch_factor=2)

    def endless():
        while True:
            for x, _ in loader:
                x.sum()
                yield x

    batches = endless()
    return _time(batches, n_warm, n_timed, batch)


def _child(args):
    if args.side == "mk":
        result = run_mk(args.root, args.workers, args.batch, args.warm, args.timed, args.image_size,
                        {"auto": None, "on": True, "off": False}[args.cache])
    else:
        result = run_torchvision(args.root, args.workers, args.batch, args.warm, args.timed, args.image_size,
                                 args.side.split(":")[1])
    print("RESULT " + json.dumps(result))


def _spawn(side, root, args, cache="auto", warm=None, timed=None):
    cmd = [sys.executable, __file__, "--child", side, "--root", root, "--workers", str(args.workers), "--batch",
           str(args.batch), "--warm", str(warm or args.warm), "--timed", str(timed or args.timed), "--image-size",
           str(args.image_size), "--cache", cache]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"{side} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(line[-1][7:])


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.expanduser("~/.cache/mk_keras/synthetic_imagenet"))
    p.add_argument("--images", type=int, default=3000, help="images of the timed folder")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warm", type=int, default=5, help="batches before timing")
    p.add_argument("--timed", type=int, default=25, help="batches timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=SIZE)
    p.add_argument("--rss-sizes", default="5000,50000")
    p.add_argument("--rss-batches", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="tiny folder, 1 round of 2 batches of 8 at 64 px")
    p.add_argument("--out")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.side = args.child
        return _child(args)
    if args.quick:
        args.images, args.batch, args.warm, args.timed, args.rounds, args.image_size = 64, 8, 1, 2, 1, 64
        args.rss_sizes, args.rss_batches = "32,64", 2
        args.data = os.path.join(args.data, "quick")
    base = os.path.join(args.data, f"base_{args.images}")
    start = time.perf_counter()
    build_folder(base, args.images, classes=min(1000, args.images))
    build_s = time.perf_counter() - start

    sides = ["mk", "torchvision:timm", "torchvision:torchvision"]
    rounds = {s: [] for s in sides}
    for r in range(args.rounds):
        for s in sides[r % len(sides):] + sides[:r % len(sides)]:  # rotate the order
            rounds[s].append(_spawn(s, base, args))
    def summary_cpu(rs):
        return _median([x["images_per_cpu_s"] for x in rs])

    summary = {}
    for s, rs in rounds.items():
        ips = _median([x["images_per_s"] for x in rs])
        summary[s] = {"images_per_s": round(ips, 1), "images_per_s_per_core": round(ips / args.workers, 1),
                      "images_per_cpu_s": round(summary_cpu(rs), 1),
                      "rounds_images_per_s": [round(x["images_per_s"], 1) for x in rs],
                      "cores_for_one_h100": round(H100_IMAGES_PER_S / (ips / args.workers), 1),
                      "cores_for_one_h100_by_cpu_s": round(H100_IMAGES_PER_S / summary_cpu(rs), 1)}
    ratios = {}
    for tv in sides[1:]:
        paired = [m["images_per_s"] / t["images_per_s"] for m, t in zip(rounds["mk"], rounds[tv])]
        ratios[f"mk_vs_{tv}"] = {"per_core_median_paired": round(_median(paired), 2),
                                  "per_cpu_s": round(summary["mk"]["images_per_cpu_s"] /
                                                     summary[tv]["images_per_cpu_s"], 2)}
    rss = {}
    for n in (int(v) for v in args.rss_sizes.split(",")):
        root = os.path.join(args.data, f"linked_{n}")
        linked_folder(base, root, n)
        r = _spawn("mk", root, args, cache="off", warm=1, timed=args.rss_batches)
        rss[str(n)] = {k: r[k] for k in ("peak_rss_mb", "load_s", "estimated_decoded_gb")}
    import tensorflow as tf

    result = {
        "image_size": args.image_size, "batch_size": args.batch, "workers": args.workers, "rounds": args.rounds,
        "batches_timed_per_round": args.timed, "folder": {**folder_stats(base), "classes": min(1000, args.images),
                                                         "build_s": round(build_s, 1)},
        "throughput": summary, "ratios": ratios,
        "mk_peak_rss_streamed_by_dataset_size": rss,
        "h100_images_per_s": H100_IMAGES_PER_S,
        "machine": {"cpu_count": os.cpu_count(), "load_avg_1min_end": round(os.getloadavg()[0], 2),
                    "machine": platform.machine(), "tensorflow": tf.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
