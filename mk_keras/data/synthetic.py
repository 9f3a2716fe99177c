"""`synthetic:K:HxWxC:N[:jpeg]`: a small generated dataset shaped like a real one, for smoke tests.

K classes, N training examples per class (example i has label i % K), `TEST_EXAMPLES` test examples spread over
the classes, images H x W x C uint8. Each class has its own smooth colour pattern (a seeded 4 x 4 grid, upsampled)
plus per-image noise, so labels carry signal; nothing about real images is imitated beyond their shape. The source
is streamed like a TFDS one: records are generated from their index (stateless seeds, the same every time), kept
encoded in memory (PNG, or JPEG with `:jpeg`, as ImageNet's TFDS records are) and decoded in `dataset`.
"""

import functools
import re

import numpy as np
import tensorflow as tf

from mk_keras.data.sources import Source

PREFIX = "synthetic:"
SPEC_FORMAT = "synthetic:K:HxWxC:N[:jpeg]"
TEST_EXAMPLES = 8
_SPLIT_IDS = {"train": 1, "test": 2}
_SPEC = re.compile(r"(\d+):(\d+)x(\d+)x([13]):(\d+)(:jpeg)?$")


def parse(text):
    """(classes, (H, W, C), examples per class, jpeg) of the part after `synthetic:`; one-line ValueError."""
    match = _SPEC.match(text)
    if not match or min(int(g) for g in match.groups()[:5]) < 1:
        raise ValueError(f"bad synthetic dataset spec {PREFIX}{text!r}; expected {SPEC_FORMAT} with K, H, W, N >= 1 "
                         "and C 1 or 3, e.g. synthetic:10:32x32x3:4 or synthetic:551:256x256x3:1:jpeg")
    k, h, w, c, n = (int(g) for g in match.groups()[:5])
    return k, (h, w, c), n, bool(match.group(6))


def spec(num_classes, shape, per_class, jpeg=False):
    """The spec string of `parse`'s values."""
    h, w, c = shape
    return f"{PREFIX}{num_classes}:{h}x{w}x{c}:{per_class}" + (":jpeg" if jpeg else "")


def _labels(split, k, n):
    if split == "train":
        return np.arange(k * n, dtype=np.int64) % k
    return np.arange(TEST_EXAMPLES, dtype=np.int64) * k // TEST_EXAMPLES


@functools.lru_cache(maxsize=8)
def _records(text, split):
    """(encoded images, labels) of a split, generated once per process (a sweep loads the same data every run)."""
    k, (h, w, c), n, jpeg = parse(text)
    labels = _labels(split, k, n)
    split_id = _SPLIT_IDS[split]

    def encode(i, y):
        pattern = tf.random.stateless_uniform([1, 4, 4, c], seed=tf.stack([y, tf.constant(0, tf.int64)]),
                                              maxval=224.0)
        image = tf.image.resize(pattern, [h, w], method="bilinear")[0]
        image += tf.random.stateless_uniform([h, w, c], seed=tf.stack([tf.constant(split_id, tf.int64), i]),
                                             maxval=32.0)
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
        return tf.io.encode_jpeg(image, quality=90) if jpeg else tf.io.encode_png(image)

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(labels), dtype=np.int64), labels))
    data = np.array(list(ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator()), dtype=object)
    return data, labels


def source(text, split):
    """The `Source` of `synthetic:<text>` for split "train" or "test"."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"split={split!r} is not available for {PREFIX}{text}; use one of {list(_SPLIT_IDS)}.")
    k, (h, w, c), n, jpeg = parse(text)
    data, labels = _records(text, split)
    encoded = tf.data.Dataset.from_tensor_slices((tf.constant(list(data), tf.string), labels))
    decoded = encoded.map(lambda d, y: (tf.ensure_shape(tf.io.decode_image(d, channels=c, expand_animations=False),
                                                        [h, w, c]), y))
    return Source(
        class_names=[f"class{i}" for i in range(k)],
        image_shape=(h, w, c),
        provenance=f"synthetic {split}: {k} classes, {len(labels)} generated {h}x{w}x{c} "
        f"{'JPEG' if jpeg else 'PNG'} images (not real data)",
        dataset=decoded,
        encoded=encoded,
        num_examples=len(labels),
        count_labels=lambda: np.bincount(labels, minlength=k).astype(np.int64),
    )
