"""A resumed run's input stream (`make_pipeline(repeat=True, skip_batches=g)`) works only inside the current
pass: earlier passes are not read, and the batches of the current pass before g are neither read from files nor
decoded (streamed path) or are batched but not augmented (in-memory path). Read and augmented items are counted
by instrumenting the pipeline's own ops from the test."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mk_keras import data
from mk_keras.data import pipeline

BATCH = 4


def _record_file_reads(monkeypatch):
    """The paths `tf.io.read_file` reads from now on, in execution order (the pipeline calls it when traced)."""
    paths = []
    real = tf.io.read_file

    def read_file(path, name=None):
        done = tf.py_function(lambda p: paths.append(p.numpy().decode()) or np.int64(0), [path], tf.int64)
        with tf.control_dependencies([done]):
            return tf.identity(real(path, name=name))

    monkeypatch.setattr(tf.io, "read_file", read_file)
    return paths


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """64 small JPEGs in 2 classes: 16 batches of 4 per pass."""
    root = tmp_path_factory.mktemp("resume_jpegs")
    rng = np.random.default_rng(0)
    for i in range(64):
        folder = root / "train" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return data.load(f"folder:{root}", split="train")


def _stream(loaded, skip, **kw):
    return data.make_pipeline(loaded, batch_size=BATCH, image_size=(16, 16), training=True, repeat=True,
                              deterministic=True, skip_batches=skip, **kw)


def _pull(stream, n, reads=None):
    if reads is not None:
        reads.clear()  # building the stream read a sample of files for its cache decision
    it = iter(stream)
    out = [next(it) for _ in range(n)]
    del it
    return out


def test_streamed_resume_reads_no_file_before_its_batch(jpegs, monkeypatch):
    n = jpegs.info.num_examples
    per_pass = n // BATCH
    reads = _record_file_reads(monkeypatch)
    _pull(_stream(jpegs, 0, transforms="imagenet", augment="basic", cache=False), 3 * per_pass, reads)
    order = list(reads)  # the files of the stream in order: file reads are sequential, one per image
    assert len(order) >= 3 * n and sorted(order[:n]) == sorted(order[n:2 * n]) and order[:n] != order[n:2 * n]

    g = 2 * per_pass + 5  # pass 2, batch 5 of 16
    _pull(_stream(jpegs, g, transforms="imagenet", augment="basic", cache=False), 1, reads)
    m = len(reads)
    # Exactly the files from batch g on, in stream order: none of passes 0-1, none of pass 2's first 5 batches
    # (a pass is a permutation, so the files of its first batches come later only in the next pass).
    assert reads == order[g * BATCH:g * BATCH + m]
    assert BATCH <= m < n  # less than one pass (a replay reads 2 passes and 20 files before the first batch)


def test_in_memory_resume_reads_only_the_current_pass_and_augments_from_its_batch(digits_small, monkeypatch):
    n = digits_small.info.num_examples
    per_pass = n // BATCH
    source_reads = []

    def count(x, y):
        done = tf.py_function(lambda: source_reads.append(1) or np.int64(0), [], tf.int64)
        with tf.control_dependencies([done]):
            return tf.identity(x), y

    counted = dataclasses.replace(digits_small, dataset=digits_small.dataset.map(count), encoded=None)
    augmented = []
    real_seed_by_step = pipeline._seed_by_step

    def recording_seed_by_step(layers, seed):
        reseed = real_seed_by_step(layers, seed)

        def record(step):
            done = tf.py_function(lambda s: augmented.append(int(s)) or np.int64(0), [step], tf.int64)
            with tf.control_dependencies([done]):
                reseed(step)

        return record

    monkeypatch.setattr(pipeline, "_seed_by_step", recording_seed_by_step)
    within = 5
    g = 3 * per_pass + within  # pass 3
    _pull(_stream(counted, g, augment="basic", cache=False), 2)
    # One pass read (its shuffle window), not the 3 before it: a replay would read 3 * n more.
    assert len(source_reads) == n
    # Batches g, g+1, ... augmented, in order; the `within` batches before g in the pass only batched.
    assert augmented[:2] == [g, g + 1] and min(augmented) == g


@pytest.fixture(scope="module")
def digits_small():
    return data.load("digits", max_per_class=8)  # 80 examples: 20 batches of 4 per pass
