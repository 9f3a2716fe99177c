"""Input-pipeline throughput: Fashion-MNIST train at 32x32x3, batch 128, with augmentation.

Warm-up: one full epoch (fills the uint8 cache). Then times `--batches` batches (the pipeline is re-iterated
across epochs as `model.fit` does). Writes one JSON object to stdout and, with --out, to a file.

    python benchmarks/input_pipeline.py --augment basic --batches 300 --out pipeline.json
"""

import argparse
import json
import os
import platform
import time

import tensorflow as tf

from mk_keras import data


def measure(augment, mixup, cutmix, batch_size, batches, image_size):
    loaded = data.load("fashion_mnist", split="train")
    pipe = data.make_pipeline(
        loaded, batch_size=batch_size, image_size=(image_size, image_size), channels=3, training=True,
        augment=augment, mixup=mixup, cutmix=cutmix,
    )
    start = time.perf_counter()
    for _ in pipe:  # warm-up epoch: decode, resize, fill the cache
        pass
    warmup_s = time.perf_counter() - start
    seen, start = 0, time.perf_counter()
    while seen < batches:
        for images, _ in pipe:
            images.numpy()  # materialise on the host, as model.fit consumes it
            seen += 1
            if seen == batches:
                break
    elapsed = time.perf_counter() - start
    return {
        "dataset": "fashion_mnist/train",
        "image_shape": [image_size, image_size, 3],
        "batch_size": batch_size,
        "augment": augment,
        "mixup": mixup,
        "cutmix": cutmix,
        "batches_timed": batches,
        "warmup_epoch_s": round(warmup_s, 2),
        "timed_s": round(elapsed, 3),
        "images_per_s": round(batches * batch_size / elapsed, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augment", default="basic", choices=["none", "basic", "randaugment"])
    parser.add_argument("--mixup", type=float, default=0.0)
    parser.add_argument("--cutmix", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    result = measure(
        None if args.augment == "none" else args.augment, args.mixup, args.cutmix,
        args.batch_size, args.batches, args.image_size,
    )
    result.update(
        tensorflow=tf.__version__,
        cpu_count=os.cpu_count(),
        load_avg_1min=round(os.getloadavg()[0], 2),
        machine=platform.machine(),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
