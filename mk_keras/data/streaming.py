"""Input pipeline for large image datasets (ImageNet-size): `make_pipeline(..., transforms="imagenet")`.

Examples flow through tf.data as file paths or encoded bytes; each is decoded inside one parallel per-image map
that applies the whole transform (`mk_keras.data.transforms`), so no decoded image is held beyond the batches in
flight. When the decoded dataset fits a memory budget it is decoded once and kept (`plan_cache`).

Training order: pass p over the data is a permutation seeded by (shuffle_seed, p): of the example indices for
image folders and cached data, of windows of `shuffle_buffer` consecutive encoded records for TFDS. Image g of
the stream (g = p * num_examples + position in the pass) is augmented from the stateless seed
(shuffle_seed, g), so it does not depend on parallelism or on how the stream was iterated before; a resumed
stream skips whole passes without reading them and, inside its pass, skips indices or encoded records before
anything is decoded.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from mk_keras.data import transforms as T

log = logging.getLogger(__name__)

AUGMENTS = (None, "basic", "randaugment")
_SAMPLE = 64  # images whose sizes estimate the mean decoded size of a variable-size dataset


def default_memory_budget():
    """A quarter of the machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _image_shape(data):
    """[H, W, C] of encoded image bytes: from the JPEG header, otherwise by decoding."""
    return tf.cond(tf.io.is_jpeg(data), lambda: tf.image.extract_jpeg_shape(data),
                   lambda: tf.shape(tf.io.decode_image(data, channels=3, expand_animations=False)))


def mean_decoded_pixels(loaded, sample=_SAMPLE):
    """Mean H * W of the source images: exact for fixed-size sources, else from `sample` images spread evenly
    over the dataset (image folders) or the first `sample` records (TFDS, other streams)."""
    shape = loaded.info.image_shape
    if None not in shape[:2]:
        return float(shape[0] * shape[1])
    enc = loaded.encoded_form()
    if enc is not None and enc.paths is not None:
        idx = np.unique(np.linspace(0, len(enc.paths) - 1, min(sample, len(enc.paths))).astype(int))
        ds = tf.data.Dataset.from_tensor_slices(enc.paths[idx]).map(lambda p: _image_shape(tf.io.read_file(p)))
    elif enc is not None:
        ds = enc.dataset.take(sample).map(lambda data, y: _image_shape(data))
    else:
        ds = loaded.dataset.take(sample).map(lambda x, y: tf.shape(x))
    shapes = np.array([s[:2] for s in ds.as_numpy_iterator()], np.float64)
    return float(np.mean(shapes[:, 0] * shapes[:, 1]))


def plan_cache(loaded, training, image_size, channels, cache=None, memory_budget=None):
    """(cache?, estimated bytes): training keeps the decoded source images (uint8 RGB), evaluation the final
    crops; `cache` True/False forces the answer, None decides: cache when the estimate fits `memory_budget`
    (bytes; default `default_memory_budget()`)."""
    n = loaded.info.num_examples
    if training:
        estimate = int(n * 3 * mean_decoded_pixels(loaded))
    else:
        estimate = int(n * image_size[0] * image_size[1] * channels)
    if cache is not None:
        return bool(cache), estimate
    budget = default_memory_budget() if memory_budget is None else memory_budget
    return estimate <= budget, estimate


def _rgb(x):
    return tf.cond(tf.shape(x)[-1] == 1, lambda: tf.image.grayscale_to_rgb(x), lambda: x)


def _store(loaded, par):
    """Every decoded source image in one flat uint8 tensor: (flat, offsets [N+1], shapes [N, 3], labels [N])."""
    enc = loaded.encoded_form()
    if enc is not None and enc.paths is not None:
        ds = tf.data.Dataset.from_tensor_slices((enc.paths, enc.labels)).map(
            lambda p, y: (tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False), y), **par)
    elif enc is not None:
        ds = enc.dataset.map(lambda d, y: (tf.io.decode_image(d, channels=3, expand_animations=False), y), **par)
    else:
        ds = loaded.dataset.map(lambda x, y: (_rgb(x), y), **par)
    ds = ds.map(lambda x, y: (tf.reshape(x, [-1]), tf.shape(x), tf.cast(y, tf.int64)), **par)
    flat, shapes, labels = ds.ragged_batch(loaded.info.num_examples).get_single_element()
    return flat.values, flat.row_splits, shapes, labels


def _indexed_passes(n, per_pass, seed, first_pass):
    """(key, index) for passes first_pass, first_pass + 1, ...: a seeded permutation of range(n) per pass,
    cut to `per_pass` examples; key = pass * n + position."""

    def one_pass(p):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, p]))
        keys = p * n + tf.range(per_pass, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((keys, order[:per_pass]))

    return tf.data.Dataset.range(first_pass, 2**62).flat_map(one_pass)


def _windowed_passes(records, n, per_pass, seed, first_pass, window):
    """(key, record, label) for passes first_pass, ...: each window of `window` consecutive records permuted
    with a seed from (seed, pass, window); key = pass * n + position."""

    def one_pass(p):
        def permute(w, record):
            data, y = record
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(y)[0]), seed=tf.stack([seed, p * (1 << 24) + w]))
            return tf.gather(data, order), tf.gather(y, order)

        ds = records.batch(window).enumerate().map(permute).prefetch(1).unbatch().take(per_pass)
        return ds.enumerate().map(lambda pos, r: (p * n + pos, *r))

    return tf.data.Dataset.range(first_pass, 2**62).flat_map(one_pass)


def validate(training, augment, erase_prob, crop_pct, interpolation, cache, memory_budget, resize_mode):
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} must be one of {list(AUGMENTS)}.")
    if not 0.0 <= erase_prob <= 1.0:
        raise ValueError(f"erase_prob={erase_prob!r} must be in [0, 1].")
    if erase_prob and not (training and augment):
        raise ValueError(f"erase_prob={erase_prob} needs training=True and augment='basic' or 'randaugment'.")
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct={crop_pct!r} must be in (0, 1].")
    if interpolation not in T.INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} must be one of {list(T.INTERPOLATIONS)}.")
    if cache not in (None, True, False):
        raise ValueError(f"cache={cache!r} must be None (decide from memory_budget), True or False with "
                         "transforms='imagenet'.")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                      or memory_budget < 0):
        raise ValueError(f"memory_budget={memory_budget!r} must be a number of bytes >= 0 or None.")
    if resize_mode != "resize":
        raise ValueError(f"resize_mode={resize_mode!r} does not apply to transforms='imagenet' (random-resized "
                         "crop for training, resize + centre crop for evaluation); leave it 'resize'.")


def per_image(loaded, batch_size, size, channels, training, augment, erase_prob, shuffle_seed, cache,
              memory_budget, crop_pct, interpolation, repeat, skip_batches, shuffle_buffer, deterministic):
    """(unbatched dataset of (float32 [h, w, channels], int64 label), number of the first batch)."""
    n = loaded.info.num_examples
    par = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": deterministic}
    cached, estimate = plan_cache(loaded, training, size, channels, cache, memory_budget)
    log.info("%s: %s (estimated %.2f GB decoded)", loaded.info.spec, "cached" if cached else "streamed",
             estimate / 1e9)
    enc = loaded.encoded_form()

    def to_channels(x):
        return T._finish(tf.image.rgb_to_grayscale(x)) if channels == 1 else x

    if not training:
        if enc is not None and enc.paths is not None:
            ds = tf.data.Dataset.from_tensor_slices((enc.paths, enc.labels)).map(
                lambda p, y: (tf.io.read_file(p), y))
        else:
            ds = enc.dataset if enc is not None else loaded.dataset.map(lambda x, y: (_rgb(x), y))
        ds = ds.map(lambda x, y: (tf.cast(to_channels(T.eval_transform(x, size, enc is not None, crop_pct,
                                                                        interpolation)), tf.uint8), y), **par)
        if cached:
            ds = ds.cache()
        return ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int64))), 0

    seed = tf.constant(shuffle_seed, tf.int64)
    if repeat:
        per_pass = n // batch_size * batch_size
        if per_pass < 1:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} examples: no full batch to repeat.")
        first_pass, within = divmod(int(skip_batches) * batch_size, per_pass)
    else:
        per_pass, first_pass, within = n, 0, 0

    if cached or (enc is None or enc.paths is not None):
        if cached:
            flat, offsets, shapes, labels = _store(loaded, par)
        elif enc is None:
            raise ValueError(f"{loaded.info.spec}: the decoded dataset ({estimate / 1e9:.1f} GB) does not fit "
                             "memory_budget and it has no encoded form to stream from (its dataset was replaced "
                             "after load()); pass cache=True or a larger memory_budget.")
        else:
            paths, labels = tf.constant(enc.paths), tf.constant(enc.labels)
        if repeat:
            keys = _indexed_passes(n, per_pass, seed, first_pass)
        else:
            keys = tf.data.Dataset.zip(tf.data.Dataset.random(shuffle_seed, rerandomize_each_iteration=True),
                                       tf.data.Dataset.range(n).shuffle(n, seed=shuffle_seed))
        keys = keys.skip(within)  # indices only: nothing read or decoded

        def fetch(key, i):
            if cached:
                return key, tf.reshape(flat[offsets[i]:offsets[i + 1]], shapes[i]), labels[i]
            return key, tf.io.read_file(paths[i]), labels[i]

        ds = keys.map(fetch)
        encoded = not cached
    else:  # a stream of encoded records (TFDS) too large to cache
        window = shuffle_buffer or min(n, 10_000)
        if repeat:
            ds = _windowed_passes(enc.dataset, n, per_pass, seed, first_pass, window)
        else:
            ds = tf.data.Dataset.zip(tf.data.Dataset.random(shuffle_seed, rerandomize_each_iteration=True),
                                     enc.dataset.shuffle(window, seed=shuffle_seed)).map(lambda k, r: (k, *r))
        ds = ds.skip(within)  # encoded records: read, not decoded
        encoded = True

    def transform(key, x, y):
        image_seed = tf.stack([seed, key])
        if augment is None:
            x = T.eval_transform(x, size, encoded, crop_pct, interpolation)
        else:
            x = T.train_transform(x, image_seed, size, encoded, randaugment=augment == "randaugment",
                                  erase_prob=erase_prob, interpolation=interpolation)
        return to_channels(x), tf.cast(y, tf.int64)

    first_batch = (first_pass * per_pass + within) // batch_size if repeat else 0
    return ds.map(transform, **par), first_batch
