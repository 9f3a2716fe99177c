"""make_pipeline: shapes, ranges, channels, augmentation, mixing, determinism, and feeding model.fit."""

import keras
import numpy as np
import pytest

import mk_keras
from mk_keras import data


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", split="test", classes="0,1,2,3")


def batches(pipe):
    return list(pipe.as_numpy_iterator())


def test_eval_pipeline_shapes_labels_and_raw_pixels(digits):
    out = batches(data.make_pipeline(digits, batch_size=32, image_size=(8, 8), channels=1, deterministic=True))
    raw = list(digits.dataset.as_numpy_iterator())
    assert sum(len(x) for x, _ in out) == digits.info.num_examples == len(raw)
    x, y = out[0]
    assert x.dtype == np.float32 and x.shape == (32, 8, 8, 1) and y.shape == (32, 4)
    assert np.array_equal(x[0], raw[0][0].astype(np.float32))  # same size: untouched raw pixels in [0, 255]
    assert np.array_equal(y.argmax(1), [r[1] for r in raw[:32]]) and np.all(y.sum(1) == 1)


def test_grey_to_rgb_pad_and_int_labels(digits):
    x, y = batches(data.make_pipeline(digits, batch_size=4, image_size=(12, 10), resize_mode="pad",
                                      one_hot=False, deterministic=True))[0]
    first = next(digits.dataset.as_numpy_iterator())[0][..., 0].astype(np.float32)
    assert x.shape == (4, 12, 10, 3) and y.dtype == np.int64
    assert np.array_equal(x[0, 2:10, 1:9, 1], first) and x[0, :2].max() == 0  # centred, zero padding
    assert np.array_equal(x[..., 0], x[..., 2])


def test_resize_and_drop_remainder(digits):
    out = batches(data.make_pipeline(digits, batch_size=50, image_size=(32, 32), drop_remainder=True))
    assert len(out) == digits.info.num_examples // 50 and all(x.shape == (50, 32, 32, 3) for x, _ in out)
    assert 0 <= min(x.min() for x, _ in out) and max(x.max() for x, _ in out) <= 255


def test_deterministic_training_pipeline_repeats_exactly(digits):
    def run(seed):
        pipe = data.make_pipeline(digits, batch_size=16, image_size=(16, 16), training=True, augment="basic",
                                  mixup=0.4, cutmix=1.0, shuffle_seed=seed, deterministic=True)
        return batches(pipe.take(3))

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])


def test_augmentation_and_mixing_change_images_not_label_mass(digits):
    plain = data.make_pipeline(digits, batch_size=64, image_size=(16, 16), training=True, deterministic=True)
    aug = data.make_pipeline(digits, batch_size=64, image_size=(16, 16), training=True, augment="basic",
                             mixup=0.8, deterministic=True)
    (x0, y0), (x1, y1) = next(plain.as_numpy_iterator()), next(aug.as_numpy_iterator())
    assert set(np.unique(y0)) == {0.0, 1.0}
    assert not np.array_equal(x0, x1) and x1.min() >= 0 and x1.max() <= 255
    assert np.allclose(y1.sum(1), 1.0) and len(np.unique(y1)) > 2  # mixed soft labels


def test_randaugment_batches(digits):
    pipe = data.make_pipeline(digits, batch_size=64, image_size=(16, 16), training=True, augment="randaugment")
    x, y = next(pipe.as_numpy_iterator())
    assert x.shape == (64, 16, 16, 3) and x.min() >= 0 and x.max() <= 255 and set(np.unique(y)) == {0.0, 1.0}


def test_shuffle_reshuffles_each_epoch(digits):
    pipe = data.make_pipeline(digits, batch_size=8, image_size=(8, 8), channels=1, training=True,
                              one_hot=False, deterministic=True)
    first, second = (np.concatenate([y for _, y in batches(pipe)]) for _ in range(2))
    raw = np.array([y for _, y in digits.dataset.as_numpy_iterator()])
    assert sorted(first) == sorted(raw) and not np.array_equal(first, raw) and not np.array_equal(first, second)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"augment": "basic"}, "need training=True"),
        ({"training": True, "augment": "autoaugment"}, "augment='autoaugment' must be one of"),
        ({"training": True, "mixup": 0.2, "one_hot": False}, "need one_hot=True"),
        ({"channels": 2}, "channels=2 must be 1 or 3"),
        ({"image_size": (32,)}, "image_size="),
        ({"resize_mode": "stretch"}, "resize_mode='stretch'"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_pipeline_arguments(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.make_pipeline(digits, **kwargs)


@pytest.mark.slow
@pytest.mark.backend_agnostic
def test_pipeline_feeds_fit():
    """Runs under TensorFlow and (make test-jax) under JAX: tf.data + Keras augmentation layers feed fit."""
    loaded = data.load("digits", classes="random_half:A:0", max_per_class=4)
    pipe = data.make_pipeline(loaded, batch_size=8, image_size=(32, 32), training=True, augment="basic", mixup=0.2)
    assert int(pipe.cardinality()) == 3  # 5 classes x 4 examples, known to Keras for progress and steps
    model = mk_keras.create_model("convnext_micro_cifar", num_classes=loaded.info.num_classes)
    # Whole-model XLA on a 2-core CPU is ~6x slower (docs/performance.md); JAX always compiles.
    jit = "auto" if keras.backend.backend() == "jax" else False
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit)
    history = model.fit(pipe.take(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("augment, mixup", [(None, 0.0), ("randaugment", 0.2)])
def test_endless_stream_starts_at_any_batch(digits, augment, mixup):
    """Batch g of `repeat=True` is the same whether the stream starts at 0 or at g, across window and pass
    boundaries (the resume guarantee), and every pass is a permutation of the data."""
    if augment and keras.backend.backend() != "tensorflow":
        pytest.skip("augmentation is set per batch on the TensorFlow backend only")

    def stream(skip):
        return data.make_pipeline(digits, batch_size=8, image_size=(8, 8), channels=3, training=True,
                                  augment=augment, mixup=mixup, deterministic=True, repeat=True,
                                  skip_batches=skip, shuffle_buffer=50)

    per_pass = digits.info.num_examples // 8
    reference = batches(stream(0).take(3 * per_pass))
    for skip in (1, 7, per_pass - 1, per_pass + 3, 2 * per_pass):
        for i, (x, y) in enumerate(batches(stream(skip).take(3))):
            np.testing.assert_array_equal(x, reference[skip + i][0], err_msg=f"skip={skip} batch {i}")
            np.testing.assert_array_equal(y, reference[skip + i][1])
    if augment is None:
        labels = [np.concatenate([y.argmax(1) for _, y in reference[p * per_pass:(p + 1) * per_pass]])
                  for p in range(2)]
        raw = np.array([y for _, y in digits.dataset.as_numpy_iterator()])
        for pass_labels in labels:  # full batches of one pass: each example at most once
            assert len(pass_labels) == per_pass * 8
            assert np.all(np.bincount(pass_labels, minlength=4) <= np.bincount(raw, minlength=4))
        assert not np.array_equal(labels[0], labels[1])  # each pass is shuffled anew


def test_endless_stream_options_need_training(digits):
    with pytest.raises(ValueError, match="need training=True"):
        data.make_pipeline(digits, repeat=True)
    with pytest.raises(ValueError, match="skip_batches=3 needs repeat=True"):
        data.make_pipeline(digits, training=True, skip_batches=3)
