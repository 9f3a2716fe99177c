"""make_pipeline(transforms="imagenet"): streamed image folders, crops, cache decision, per-image seeds, resume."""

import numpy as np
import pytest
import tensorflow as tf

from mk_keras import data
from mk_keras.data import streaming
from mk_keras.data import transforms as T

SIZE = (32, 32)
# (height, width) of the files: class a JPEGs, class b JPEGs and one PNG.
SHAPES = {"a": [(60, 80), (72, 50), (90, 90), (41, 70)], "b": [(80, 60), (64, 96), (50, 50)], "b_png": [(70, 52)]}


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 127 // (h + w)], -1)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    for name, shapes in SHAPES.items():
        cls = root / "train" / name[0]
        cls.mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(shapes):
            x = _image(h, w, 100 * len(name) + i)
            enc = tf.io.encode_png(x) if name.endswith("png") else tf.io.encode_jpeg(x, quality=90)
            (cls / f"{name}{i}.{'png' if name.endswith('png') else 'jpg'}").write_bytes(enc.numpy())
    return root


@pytest.fixture(scope="module")
def loaded(folder):
    return data.load(f"folder:{folder}", split="train")


def _pipe(loaded, **kw):
    args = {"batch_size": 4, "image_size": SIZE, "transforms": "imagenet", "deterministic": True}
    return data.make_pipeline(loaded, **{**args, **kw})


def _batches(pipe, n):
    return [(x.numpy(), y.numpy()) for x, y in pipe.take(n)]


def test_shapes_dtypes_and_range(loaded):
    assert loaded.encoded_form() is not None and len(loaded.encoded_form().paths) == 8
    x, y = _batches(_pipe(loaded, training=True, augment="randaugment", erase_prob=0.25, repeat=True), 1)[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32 and y.shape == (4, 2) and y.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and np.array_equal(x, np.round(x))
    ev = _batches(_pipe(loaded, channels=1, one_hot=False), 3)
    assert [len(b[0]) for b in ev] == [4, 4] and ev[0][0].shape == (4, 32, 32, 1) and ev[0][1].dtype == np.int64


def test_crop_windows_inside_the_image_and_in_scale_range():
    for h, w in [(60, 80), (375, 500), (33, 200)]:
        for s in range(200):
            y, x, ch, cw = T.crop_window([h, w, 3], tf.constant([7, s], tf.int64)).numpy()
            assert 0 <= y and 0 <= x and y + ch <= h and x + cw <= w
            if (ch, cw) != (h, w):  # the whole image is the fallback
                assert 0.08 * h * w * 0.95 <= ch * cw <= h * w and 0.7 <= cw / ch <= 1.4


def test_fused_jpeg_crop_matches_decode_then_crop(folder):
    # Same window; libjpeg's chroma upsampling at the window's edge changes < 1 % of the values by a few levels.
    jpeg = tf.io.read_file(str(folder / "train" / "a" / "a2.jpg"))
    full = tf.io.decode_jpeg(jpeg, channels=3)
    for s in range(5):
        seed = tf.constant([3, s], tf.int64)
        fused = T.decode_random_crop(jpeg, seed).numpy().astype(int)
        diff = np.abs(fused - T.random_crop(full, seed).numpy())
        assert diff.shape == fused.shape and diff.max() <= 8 and (diff > 0).mean() < 0.01


def test_eval_centre_crop_matches_hand_computation(loaded, folder):
    # b_png0.png is 70 x 52 (H x W): shorter side 52 -> floor(32 / 0.875) = 36, other side floor(70 * 36 / 52)
    # = 48; crop 32 x 32 at ((48 - 32) // 2, (36 - 32) // 2) = (8, 2).
    image = _image(70, 52, 100 * 5 + 0)
    assert [v.numpy() for v in T.eval_resize_shape(70, 52, SIZE, 0.875)] == [48, 36]
    resized = tf.image.resize(image.astype(np.float32), (48, 36), method="bicubic", antialias=True).numpy()
    expected = np.clip(np.round(resized), 0, 255)[8:40, 2:34]
    x, y = next(iter(_pipe(loaded, batch_size=8, one_hot=False)))
    assert np.array_equal(x.numpy()[-1], expected) and y.numpy()[-1] == 1


def test_stream_is_not_cached_over_budget(loaded):
    pixels = np.mean([h * w for shapes in SHAPES.values() for h, w in shapes])
    assert streaming.plan_cache(loaded, True, SIZE, 3) == (True, int(8 * 3 * pixels))  # 25 % of RAM: fits
    assert streaming.plan_cache(loaded, True, SIZE, 3, memory_budget=1000)[0] is False
    assert streaming.plan_cache(loaded, True, SIZE, 3, cache=True, memory_budget=1000)[0] is True
    assert streaming.plan_cache(loaded, False, SIZE, 3, memory_budget=8 * 32 * 32 * 3) == (True, 8 * 32 * 32 * 3)

    def ops(pipe):  # the dataset ops and the ops inside its functions
        graph = tf.compat.v1.GraphDef.FromString(pipe._as_serialized_graph().numpy())
        return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}

    assert not any("Cache" in op for op in ops(_pipe(loaded, memory_budget=1000)))
    assert any("Cache" in op for op in ops(_pipe(loaded)))
    streamed = _pipe(loaded, training=True, augment="basic", repeat=True, memory_budget=1000)
    assert not any("Cache" in op for op in ops(streamed)) and "ReadFile" in ops(streamed)


def test_per_image_augmentation_differs_within_a_batch(tmp_path):
    image = tf.io.encode_jpeg(_image(64, 64, 1)).numpy()
    for i in range(8):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / f"{i}.jpg").write_bytes(image)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "0.jpg").write_bytes(image)
    same = data.load(f"folder:{tmp_path}", split="train")  # 8 identical files (stratified split keeps ties)
    x = _batches(_pipe(same, batch_size=4, image_size=(64, 64), training=True, augment="randaugment",
                       repeat=True), 1)[0][0]
    assert all(not np.array_equal(x[i], x[j]) for i in range(4) for j in range(i))
    # RandAugment alone, always applied: different images get different ops.
    base = tf.constant(_image(32, 32, 2), tf.float32)
    outs = {T.rand_augment(base, tf.constant([0, s], tf.int64), prob=1.0).numpy().tobytes() for s in range(12)}
    assert len(outs) >= 10


def test_seeded_determinism_resume_and_cache_equivalence(loaded):
    def run(seed, **kw):
        args = {"training": True, "augment": "randaugment", "erase_prob": 0.5, "repeat": True, "shuffle_seed": seed}
        return _batches(_pipe(loaded, **{**args, **kw}), 5)

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])
    resumed = run(1, skip_batches=3)[:2]  # batch 3 of the stream is the first after skipping 3
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a[3:], resumed))
    # Decoded once and kept, the same crops and flips (up to the fused decode's edge pixels, above).
    streamed, cached = run(1, augment="basic", erase_prob=0.0), run(1, augment="basic", erase_prob=0.0, cache=True)
    assert all(np.abs(p[0] - q[0]).mean() < 0.5 and np.array_equal(p[1], q[1]) for p, q in zip(streamed, cached))


@pytest.mark.parametrize("kw, match", [
    ({"transforms": "timm"}, "transforms='timm'"),
    ({"erase_prob": 1.5, "training": True, "augment": "basic"}, "erase_prob=1.5"),
    ({"erase_prob": 0.25}, "needs training=True"),
    ({"crop_pct": 0.0}, "crop_pct=0.0"),
    ({"interpolation": "area"}, "interpolation='area'"),
    ({"cache": "/tmp/file"}, "cache='/tmp/file'"),
    ({"memory_budget": -1}, "memory_budget=-1"),
    ({"resize_mode": "pad"}, "resize_mode='pad'"),
])
def test_bad_arguments_raise_one_line(loaded, kw, match):
    with pytest.raises(ValueError, match=match) as err:
        _pipe(loaded, **kw)
    assert "\n" not in str(err.value)


@pytest.mark.long
def test_benchmark_quick_prints_the_comparison(tmp_path):
    import json
    import subprocess
    import sys

    script = __file__.replace("tests/data/test_large_pipeline.py", "benchmarks/input_pipeline.py")
    out = subprocess.run([sys.executable, script, "--quick", "--data", str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out[out.index("{"):])
    assert set(result["throughput"]) == {"mk", "torchvision:timm", "torchvision:torchvision"}
    assert all(v["images_per_s"] > 0 for v in result["throughput"].values())
    assert set(result["mk_peak_rss_streamed_by_dataset_size"]) == {"32", "64"}
    assert result["folder"]["images"] == 64


def test_encoded_records_stream_in_training():
    """TFDS-like encoded records (every full-size ImageNet / Food-101 run) through the endless training stream:
    the windowed per-pass shuffle once broke on their (bytes, label) records."""
    records = data.load("synthetic:3:40x40x3:4:jpeg", split="train")
    pipe = data.make_pipeline(records, batch_size=4, image_size=(32, 32), channels=3, training=True,
                              augment="basic", shuffle_seed=1, repeat=True, transforms="imagenet", cache=False)
    (x, y), = _batches(pipe, 1)
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 3)  # one-hot labels
    assert np.allclose(y.sum(axis=1), 1.0) and 0.0 <= x.min() and x.max() <= 255.0
