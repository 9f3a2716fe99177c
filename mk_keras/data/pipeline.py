"""tf.data input pipeline: resize/pad, channels, cache, shuffle, batch, augment, mix, prefetch.

Normalisation lives in the models (`mk_keras.models.layers.preprocessing`): batches carry raw float32
pixels in [0, 255]. Order: per-image resize + channel conversion -> uint8 cache -> seeded shuffle -> batch ->
batch-level augmentation with Keras core layers -> MixUp/CutMix -> prefetch(AUTOTUNE). The pipeline works
under any Keras backend (Keras preprocessing layers run on TF inside tf.data).
"""

import keras
import tensorflow as tf

AUGMENTS = (None, "basic", "randaugment")
# tf.data autotuning off. Its optimisation thread wakes up 10 ms, 20 ms, 40 ms, ... (doubling) after an iterator
# starts, and deleting the iterator waits for the next wake-up: with TensorFlow 2.21 that added up to several
# seconds of idle time to the end of a `fit` or `evaluate`. Without it, AUTOTUNE map parallelism still uses all
# cores, and this pipeline was no slower (docs/performance.md).
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False
RESIZE_MODES = ("resize", "pad", "crop")
TRANSFORMS = (None, "imagenet")


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _resize(images, size, mode):
    """Resize uint8 images ([H,W,C] or [B,H,W,C]) to `size`; returns uint8."""
    if mode == "pad":
        return tf.image.resize_with_crop_or_pad(images, *size)
    if mode == "crop":
        shape = tf.cast(tf.shape(images)[-3:-1], tf.float32)
        scale = tf.reduce_max(tf.constant(size, tf.float32) / shape)
        scaled = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        images = _to_uint8(tf.image.resize(images, scaled, antialias=True))
        return tf.image.resize_with_crop_or_pad(images, *size)
    return _to_uint8(tf.image.resize(images, size, antialias=True))


def _prepare(images, size, channels, mode, in_channels):
    if tuple(images.shape[-3:-1]) != tuple(size):
        images = _resize(images, size, mode)
    if in_channels == 1 and channels == 3:
        images = tf.image.grayscale_to_rgb(images)
    elif in_channels == 3 and channels == 1:
        images = _to_uint8(tf.image.rgb_to_grayscale(tf.cast(images, tf.float32)))
    return images


def _augmenter(augment, seed):
    """'basic': shift up to 1/8 of the side with zero fill (pad-and-random-crop) + horizontal flip;
    'randaugment': basic + keras.layers.RandAugment (2 ops, factor 0.5; ops drawn per batch)."""
    if augment is None:
        return None
    layers = [
        keras.layers.RandomTranslation(
            0.125, 0.125, fill_mode="constant", fill_value=0.0, interpolation="nearest", seed=seed
        ),
        keras.layers.RandomFlip("horizontal", seed=seed),
    ]
    if augment == "randaugment":
        layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed))
    return layers


def _mixer(mixup, cutmix, seed):
    """MixUp(alpha=mixup) and/or CutMix(factor=cutmix); with both, each batch uses one at random (p=0.5)."""
    mix = keras.layers.MixUp(alpha=mixup, seed=seed) if mixup > 0 else None
    cut = keras.layers.CutMix(factor=cutmix, seed=seed) if cutmix > 0 else None
    if mix is None and cut is None:
        return None, []

    def apply(step, images, labels):
        def run(layer):
            out = layer({"images": images, "labels": labels}, training=True)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

        if mix is None or cut is None:
            return run(mix or cut)
        coin = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), step]))
        return tf.cond(coin < 0.5, lambda: run(mix), lambda: run(cut))

    return apply, [layer for layer in (mix, cut) if layer is not None]


# Random draws a layer makes per batch stay below this: batch `step` draws seeds (s, step * _DRAWS + j).
_DRAWS = 1 << 12


def _seed_by_step(layers, seed):
    """A function `reseed(step)` that sets the seed-generator state of every random Keras layer in `layers`
    from (seed, layer, step): batch `step` is augmented the same way however the stream was iterated before
    (a resumed run's new iterator included). Only for sequential (deterministic) maps, where parallel calls
    cannot race on the shared state, and the TensorFlow backend."""
    states = [v for layer in layers for v in layer.variables if "seed_generator_state" in v.path]
    def reseed(step):
        for i, state in enumerate(states):
            value = tf.stack([tf.cast(seed + 7919 * i, tf.int64), tf.cast(step, tf.int64) * _DRAWS])
            state.assign(tf.cast(value, state.dtype))

    return reseed


def _endless(ds, buffer, batch_size, seed, num_examples, skip_batches, par):
    """(stream of batches starting at batch `skip_batches`, that batch's number): see `make_pipeline(repeat=True)`."""
    per_pass = num_examples // batch_size
    if per_pass < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} examples: no full batch to repeat.")
    first_pass, within = divmod(int(skip_batches), per_pass)

    def permute(p, window, x, y):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(y)[0]), seed=tf.stack([tf.constant(seed, tf.int64), p * (1 << 24) + window]))
        return tf.gather(x, order), tf.gather(y, order)

    def one_pass(p):
        # Stateless: tf.data's seeded shuffle takes no per-pass tensor seed when TensorFlow's global seed is 0.
        windows = ds.batch(buffer).enumerate().map(lambda w, xy: permute(p, w, *xy)).prefetch(1)
        return windows.unbatch().batch(batch_size, drop_remainder=True, **par)

    stream = tf.data.Dataset.range(first_pass, 2**62).flat_map(one_pass)
    return stream.skip(within), int(skip_batches)


def _validate(loaded, batch_size, image_size, channels, training, augment, mixup, cutmix, one_hot, resize_mode):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if len(image_size) != 2 or any(not isinstance(s, int) or s < 1 for s in image_size):
        raise ValueError(f"image_size={image_size!r} must be (height, width) positive integers.")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} must be 1 or 3.")
    if loaded.info.image_shape[-1] not in (1, 3):
        raise ValueError(f"source images have {loaded.info.image_shape[-1]} channels; supported: 1 or 3.")
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} must be one of {list(AUGMENTS)}.")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode={resize_mode!r} must be one of {list(RESIZE_MODES)}.")
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup={mixup!r} and cutmix={cutmix!r} must be >= 0 (0 disables).")
    if not training and (augment or mixup or cutmix):
        raise ValueError(f"augment={augment!r}, mixup={mixup}, cutmix={cutmix} need training=True.")
    if (mixup or cutmix) and not one_hot:
        raise ValueError(f"mixup={mixup}/cutmix={cutmix} mix labels, so they need one_hot=True.")


def make_pipeline(
    loaded,
    batch_size=128,
    image_size=(32, 32),
    channels=3,
    training=False,
    augment=None,
    mixup=0.0,
    cutmix=0.0,
    shuffle_seed=0,
    cache=None,
    deterministic=False,
    drop_remainder=False,
    one_hot=True,
    resize_mode="resize",
    shuffle_buffer=None,
    repeat=False,
    skip_batches=0,
    transforms=None,
    erase_prob=0.0,
    crop_pct=0.875,
    interpolation="bicubic",
    memory_budget=None,
):
    """Batched (images float32 [B,H,W,C] in [0, 255], labels) dataset for `model.fit` / `evaluate`.

    Args:
      loaded: a `LoadedDataset` from `load()`.
      image_size, channels: the model's input size; grey sources become RGB for channels=3 and RGB
        becomes grey for channels=1.
      training: shuffle (seeded, reshuffled each epoch) and allow augmentation/mixing.
      augment: None, "basic" or "randaugment" (see `_augmenter`): Keras layers applied to whole batches;
        "basic" draws shift and flip per image, RandAugment picks its ops per batch.
      mixup, cutmix: MixUp alpha / CutMix factor, 0 disables; both > 0: one of them per batch.
      shuffle_seed: seeds the shuffle, augmentation and mixing.
      cache: True (default) caches the resized uint8 images in memory, a string caches to that file, False none.
        With transforms="imagenet": None (default) caches when the estimate fits `memory_budget`, True / False
        force it (`mk_keras.data.streaming.plan_cache`).
      deterministic: same batches in the same order on every run: augmentation runs sequentially and (TensorFlow
        backend) its random state is set from (shuffle_seed, batch number), so batch g is the same whichever
        iterator produces it.
      one_hot: labels float32 one-hot [B, k]; otherwise int64 [B].
      resize_mode: "resize" (bilinear, antialiased), "pad" (centre pad/crop without scaling) or "crop"
        (scale the shorter side to fit, centre crop).
      shuffle_buffer: default min(num_examples, 50000).
      repeat: (training) an endless stream of passes over the data, full batches only; pass p permutes each
        window of `shuffle_buffer` consecutive examples (all of them when they fit: every dataset up to 50,000
        examples by default) with a stateless seed made from (shuffle_seed, p, window); windows keep their
        order. So batch g of the stream does not depend on how the stream was iterated before. `skip_batches`
        starts the stream at batch g: whole passes are skipped without reading them, and the batches before g in
        its pass are batched but not augmented.
      transforms: None: the in-memory path above (resize everything to `image_size`, cache, batch-level
        augmentation). "imagenet": the large-dataset path (`mk_keras.data.streaming`): images streamed as files
        or encoded bytes and transformed one by one in parallel maps. Training: augment="basic" is a
        random-resized crop (fused with the JPEG decode) + horizontal flip, "randaugment" adds RandAugment as
        timm's rand-m9-mstd0.5-inc1, None takes the evaluation crop; `erase_prob` > 0 adds random erasing
        (ConvNeXt: 0.25). Evaluation: resize the shorter side to size / `crop_pct`, centre crop.
        `interpolation` ("bicubic" as ConvNeXt, or "bilinear") for both; `memory_budget` (bytes) decides
        `cache=None`. Per-image seeds come from (shuffle_seed, image number in the stream), so batches depend
        only on the seed, and with `deterministic=True` their order too; `skip_batches` skips file indices or
        encoded records, never decoded images.
    """
    _validate(loaded, batch_size, image_size, channels, training, augment, mixup, cutmix, one_hot, resize_mode)
    if transforms not in TRANSFORMS:
        raise ValueError(f"transforms={transforms!r} must be one of {list(TRANSFORMS)}.")
    if transforms is None and (erase_prob or memory_budget is not None):
        raise ValueError(f"erase_prob={erase_prob!r} / memory_budget={memory_budget!r} need transforms='imagenet'.")
    if (repeat or skip_batches) and not training:
        raise ValueError(f"repeat={repeat!r} / skip_batches={skip_batches!r} make a training stream; they need "
                         "training=True.")
    if skip_batches and not repeat:
        raise ValueError(f"skip_batches={skip_batches!r} needs repeat=True.")
    size, k = tuple(image_size), loaded.info.num_classes
    in_channels = loaded.info.image_shape[-1]
    ds = loaded.dataset

    def prepare(x, y):
        return _prepare(x, size, channels, resize_mode, in_channels), y

    # Order-sensitive steps take `deterministic` per op, so upstream sources keep their own (ordered) reads.
    par = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": deterministic}
    if transforms == "imagenet":
        from mk_keras.data import streaming

        streaming.validate(training, augment, erase_prob, crop_pct, interpolation, cache, memory_budget,
                           resize_mode)
        ds, first_batch = streaming.per_image(
            loaded, batch_size, size, channels, training, augment, erase_prob, shuffle_seed, cache, memory_budget,
            crop_pct, interpolation, repeat, skip_batches, shuffle_buffer, deterministic)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder or repeat, **par)
        return _finish_batches(ds, first_batch, None, k, one_hot, mixup, cutmix, shuffle_seed, training,
                               deterministic, par, tf.data.Options())
    if None not in loaded.info.image_shape:  # equal-size images: resize in chunks (vectorised)
        ds = ds.batch(1024).map(prepare, **par).unbatch()
    else:
        ds = ds.map(prepare, **par)
        ds = ds.map(lambda x, y: (tf.ensure_shape(x, size + (channels,)), y))
    ds = ds.apply(tf.data.experimental.assert_cardinality(loaded.info.num_examples))
    if cache is None or cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    buffer = shuffle_buffer or max(1, min(loaded.info.num_examples, 50_000))
    first_batch = 0
    if training and repeat:
        ds, first_batch = _endless(ds, buffer, batch_size, shuffle_seed, loaded.info.num_examples, skip_batches, par)
    else:
        if training:
            ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, **par)

    augmenter = _augmenter(augment, shuffle_seed) if training else None
    return _finish_batches(ds, first_batch, augmenter, k, one_hot, mixup, cutmix, shuffle_seed, training,
                           deterministic, par, _OPTIONS)


def _finish_batches(ds, first_batch, augmenter, k, one_hot, mixup, cutmix, shuffle_seed, training, deterministic,
                    par, options):
    """Batch-level augmentation, one-hot labels, MixUp/CutMix, float32 in [0, 255], prefetch."""
    mixer, mix_layers = _mixer(mixup, cutmix, shuffle_seed) if training else (None, [])
    # Under another Keras backend the layers draw, inside tf.data, from TensorFlow generators Keras creates on
    # first use: their state cannot be set from here, so augmented batches there depend on the iterator.
    by_step = deterministic and keras.backend.backend() == "tensorflow"
    reseed = _seed_by_step([*(augmenter or ()), *mix_layers], shuffle_seed) if by_step else None

    def finish(step, images, labels):
        if reseed is not None:
            reseed(step)
        x = tf.cast(images, tf.float32)
        for layer in augmenter or ():
            x = tf.cast(layer(x, training=True), tf.float32)
        y = tf.one_hot(labels, k, dtype=tf.float32) if one_hot else labels
        if mixer is not None:
            x, y = mixer(step, x, y)
        return tf.clip_by_value(x, 0.0, 255.0), y

    # Keras random layers keep seed state: deterministic mode sets it per batch, sequentially.
    ds = ds.enumerate(first_batch).map(lambda step, xy: finish(step, *xy), **({} if deterministic else par))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
