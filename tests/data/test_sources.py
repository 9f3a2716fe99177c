"""Dataset specs: embedded data, image folders, TFDS (offline via tfds.testing.mock_data), bad input."""

import gzip
import hashlib
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mk_keras import data
from mk_keras.data import sources

HAVE_FASHION = all(
    os.path.isfile(os.path.join(sources.FASHION_MNIST_DEBIAN_DIR, f))
    for names in sources.FASHION_MNIST_FILES.values()
    for f in names
)


def labels_of(loaded):
    return np.array([int(y) for _, y in loaded.dataset.as_numpy_iterator()])


# --- Fashion-MNIST -----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_FASHION, reason="needs: sudo apt-get install dataset-fashion-mnist")
def test_fashion_mnist_counts_and_provenance():
    train = data.load("fashion_mnist", split="train")
    test = data.load("fashion_mnist", split="test")
    assert (train.info.num_examples, test.info.num_examples) == (60000, 10000)
    assert train.info.image_shape == (28, 28, 1) and train.info.class_names[9] == "Ankle boot"
    assert "dataset-fashion-mnist" in train.info.provenance
    images, labels = next(iter(train.dataset.batch(60000)))
    assert images.dtype == tf.uint8 and images.shape == (60000, 28, 28, 1)
    assert np.bincount(labels.numpy()).tolist() == [6000] * 10


@pytest.mark.skipif(not HAVE_FASHION, reason="needs: sudo apt-get install dataset-fashion-mnist")
def test_fashion_split_reindexes_and_subsamples():
    full = data.load("fashion_mnist", split="test")
    acc = data.load("fashion_mnist", split="test", classes="fashion_accessories", max_per_class=30, seed=1)
    assert acc.info.class_names == ["Sandal", "Sneaker", "Bag", "Ankle boot"]
    assert acc.info.class_mapping == {5: 0, 7: 1, 8: 2, 9: 3} and acc.info.num_examples == 120
    assert np.bincount(labels_of(acc)).tolist() == [30] * 4
    # Every kept image is an image of the original class it was re-indexed from.
    images, labels = next(iter(full.dataset.batch(10000)))
    originals = {(hashlib.sha1(x.tobytes()).hexdigest(), int(y)) for x, y in zip(images.numpy(), labels.numpy())}
    inverse = {new: old for old, new in acc.info.class_mapping.items()}
    for x, y in acc.dataset.as_numpy_iterator():
        assert (hashlib.sha1(x.tobytes()).hexdigest(), inverse[int(y)]) in originals
    again = data.load("fashion_mnist", split="test", classes="fashion_accessories", max_per_class=30, seed=1)
    other = data.load("fashion_mnist", split="test", classes="fashion_accessories", max_per_class=30, seed=2)
    first = lambda d: next(d.dataset.as_numpy_iterator())[0]  # noqa: E731
    assert np.array_equal(first(acc), first(again)) and not np.array_equal(first(acc), first(other))
    with pytest.raises(ValueError, match="max_per_class=1001 is larger than the 1000 examples"):
        data.load("fashion_mnist", split="test", max_per_class=1001)


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_data_dir_and_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(FileNotFoundError, match="sudo apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", download=False)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 9]))
    loaded = data.load("fashion_mnist", split="test", classes="0,9", data_dir=str(tmp_path), download=False)
    got = list(loaded.dataset.as_numpy_iterator())
    assert loaded.info.num_examples == 3 and [int(y) for _, y in got] == [1, 0, 1]
    with pytest.raises(ValueError, match=r"fashion_mnist\[test\] has no example of class\(es\) 'Trouser'; "
                                         r"'Pullover'; 'Dress'; 'Coat'; 'Sandal'; and 3 more; remove them"):
        data.load("fashion_mnist", split="test", data_dir=str(tmp_path), download=False)
    assert np.array_equal(got[1][0][..., 0], images[1]) and str(tmp_path) in loaded.info.provenance
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(ValueError, match="header says"):
        data.load("fashion_mnist", split="test", data_dir=str(tmp_path), download=False)


def test_idx_files_are_read_once_while_unchanged(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    _write_idx(path, np.array([1, 2, 3]))
    first = sources._read_idx(str(path))
    assert sources._read_idx(str(path)) is first and not first.flags.writeable
    _write_idx(path, np.array([7, 8, 9]))  # same size, new modification time
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1))
    np.testing.assert_array_equal(sources._read_idx(str(path)), [7, 8, 9])


# --- Animal-MNIST, digits ----------------------------------------------------------------------------


def test_animal_mnist_split_is_stratified_deterministic_and_duplicate_free():
    train = data.load("animal_mnist", split="train")
    test = data.load("animal_mnist", split="test")
    assert (train.info.num_examples, test.info.num_examples) == (8000, 2000)
    assert train.info.class_names == sources.ANIMAL_MNIST_CLASSES
    assert "PyPI animal-mnist" in test.info.provenance and "stratified" in test.info.provenance
    hashes = {}
    for name, loaded in (("train", train), ("test", test)):
        images, labels = next(iter(loaded.dataset.batch(10000)))
        assert np.bincount(labels.numpy()).tolist() == [800 if name == "train" else 200] * 10
        hashes[name] = {hashlib.sha1(x.tobytes()).hexdigest() for x in images.numpy()}
    assert not hashes["train"] & hashes["test"]  # exact duplicates never straddle the split
    again = data.load("animal_mnist", split="test")
    assert np.array_equal(next(iter(test.dataset.batch(50)))[0], next(iter(again.dataset.batch(50)))[0])


def test_animal_mnist_missing_package(monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install animal-mnist"):
        data.load("animal_mnist")


def test_digits_and_split_names():
    train = data.load("digits", classes="0,1,2")
    assert train.info.image_shape == (8, 8, 1) and train.info.num_classes == 3
    x, _ = next(train.dataset.as_numpy_iterator())
    assert x.dtype == np.uint8 and x.max() > 200  # 0..16 scaled to 0..255
    with pytest.raises(ValueError, match="split='validation' is not available for digits"):
        data.load("digits", split="validation")


def test_stratified_split_targets():
    labels = np.repeat([0, 1], [10, 5])
    keys = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8] + [9, 10, 11, 12, 13])
    test = sources.stratified_split(labels, "test", keys=keys)
    train = sources.stratified_split(labels, "train", keys=keys)
    assert np.bincount(labels[test]).tolist() == [2, 1]
    assert sorted(np.concatenate([test, train]).tolist()) == list(range(15))
    assert (0 in test) == (1 in test)  # same key, same side


# --- image folders -----------------------------------------------------------------------------------


def _png(path, value, size=(6, 5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full(size + (3,), value, np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())


def test_folder_with_split_dirs_and_corrupt_file(tmp_path):
    for i in range(3):
        _png(tmp_path / "train" / "cat" / f"{i}.png", 10 + i)
        _png(tmp_path / "train" / "dog" / f"{i}.png", 100 + i, size=(9, 7))
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored: not an image extension")
    loaded = data.load(f"folder:{tmp_path}", split="train")
    assert loaded.info.class_names == ["cat", "dog"] and loaded.info.num_examples == 6
    assert loaded.info.image_shape == (None, None, 3)
    assert [os.path.basename(p) for p in loaded.info.skipped_files] == ["broken.jpg"]
    assert "1 undecodable skipped" in loaded.info.provenance
    got = sorted((int(y), int(x[0, 0, 0]), x.shape) for x, y in loaded.dataset.as_numpy_iterator())
    assert got[0] == (0, 10, (6, 5, 3)) and got[-1] == (1, 102, (9, 7, 3))
    pipe = data.make_pipeline(loaded, batch_size=4, image_size=(8, 8))
    # sorted: by default (deterministic=False) the parallel map may hand out the short last batch first
    assert sorted(tuple(x.shape) for x, _ in pipe) == [(2, 8, 8, 3), (4, 8, 8, 3)]
    dogs = data.load(f"folder:{tmp_path}", split="train", classes="dog")
    assert dogs.info.num_examples == 3 and set(labels_of(dogs)) == {0}
    with pytest.raises(ValueError, match=r"split='test' is not available for folder:.*use one of \['train'\]"):
        data.load(f"folder:{tmp_path}", split="test")


def test_folder_without_split_dirs_gets_stratified_split(tmp_path):
    for i in range(10):
        _png(tmp_path / "a" / f"{i}.png", i)
        _png(tmp_path / "b" / f"{i}.png", 50 + i)
    train = data.load(f"folder:{tmp_path}", split="train")
    test = data.load(f"folder:{tmp_path}", split="test")
    assert (train.info.num_examples, test.info.num_examples) == (16, 4)
    assert np.bincount(labels_of(test)).tolist() == [2, 2]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        data.load(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="no decodable images"):
        data.load(f"folder:{tmp_path / 'bad'}", split="test")


def test_empty_and_undecodable_class_folders_are_refused_or_dropped(tmp_path, caplog):
    for i in range(3):
        _png(tmp_path / "train" / "ant" / f"{i}.png", 10 + i)
        _png(tmp_path / "train" / "cow" / f"{i}.png", 100 + i)
    (tmp_path / "train" / "bee").mkdir()
    (tmp_path / "train" / "bee" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "dog").mkdir()
    for i in range(2):
        (tmp_path / "train" / "dog" / f"{i}.png").write_bytes(b"garbage")
    bee, dog = tmp_path / "train" / "bee", tmp_path / "train" / "dog"
    with pytest.raises(ValueError) as info:
        data.load(f"folder:{tmp_path}")
    assert str(info.value) == (
        f"folder:{tmp_path}[train] has no example of class(es) 'bee': {bee} holds no image file; 'dog': none of "
        f"the 2 image(s) in {dog} can be decoded; remove them from the selection, fix the data, or pass "
        "drop_empty_classes=True to drop them")
    assert data.load(f"folder:{tmp_path}", classes="ant,cow").info.num_classes == 2  # not selected: fine

    with caplog.at_level("WARNING"):
        loaded = data.load(f"folder:{tmp_path}", drop_empty_classes=True)
    assert "dropped 2 class(es) without an example, labels re-indexed: 'bee'" in caplog.text
    info = loaded.info
    assert info.class_names == ["ant", "cow"] and info.num_classes == 2 and info.num_examples == 6
    assert info.class_mapping == {0: 0, 2: 1} and info.dropped_classes == ("bee", "dog")
    assert "2 classes (dropped empty: bee, dog)" in str(info)
    got = sorted((int(y), int(x[0, 0, 0])) for x, y in loaded.dataset.as_numpy_iterator())
    assert got == [(0, 10), (0, 11), (0, 12), (1, 100), (1, 101), (1, 102)]
    with pytest.raises(ValueError, match="every selected class is empty"):
        data.load(f"folder:{tmp_path}", classes="bee,dog", drop_empty_classes=True)


def test_split_folders_share_labels_and_a_missing_class_folder_is_empty(tmp_path):
    for split, classes in (("train", "abc"), ("test", "ac")):
        for c in classes:
            for i in range(2):
                _png(tmp_path / split / c / f"{i}.png", ord(c) + i)
    assert data.load(f"folder:{tmp_path}", split="test", classes="a,c").info.class_mapping == {0: 0, 2: 1}
    with pytest.raises(ValueError, match=f"'b': there is no folder {re.escape(str(tmp_path / 'test' / 'b'))} "
                                         r"\(only in other split folders\)"):
        data.load(f"folder:{tmp_path}", split="test")
    test = data.load(f"folder:{tmp_path}", split="test", drop_empty_classes=True)
    assert test.info.class_names == ["a", "c"] and test.info.class_mapping == {0: 0, 2: 1}
    assert sorted((int(y), int(x[0, 0, 0])) for x, y in test.dataset.as_numpy_iterator())[-1] == (1, ord("c") + 1)


def test_class_with_all_files_in_the_other_split(tmp_path):
    for i in range(10):
        _png(tmp_path / "many" / f"{i}.png", i)
    for i in range(2):  # round(0.2 * 2) = 0 test images
        _png(tmp_path / "few" / f"{i}.png", 100 + i)
    assert data.load(f"folder:{tmp_path}", split="train").info.num_classes == 2
    with pytest.raises(ValueError, match=r"'few': the 2 image\(s\) of .*few all fall in the other split"):
        data.load(f"folder:{tmp_path}", split="test")


def test_named_split_of_another_dataset_is_refused():
    with pytest.raises(ValueError, match=r"classes='fashion_garments' is a split of fashion_mnist or "
                                         r"tfds:fashion_mnist \(10 classes\); digits\[train\] has classes '0'"):
        data.load("digits", classes="fashion_garments")
    with pytest.raises(ValueError, match=r"classes='cifar100_natural' is a split of tfds:cifar100 \(100 classes\); "
                                         r"digits\[test\] has 10 classes"):
        data.load("digits", split="test", classes="cifar100_natural")


# --- TFDS (offline) ----------------------------------------------------------------------------------


def test_tfds_cifar100_manmade_counts_and_reindexing(tmp_path):
    with tfds.testing.mock_data(num_examples=64):
        raw = [int(y) for _, y in tfds.load("cifar100", split="train", as_supervised=True).as_numpy_iterator()]
        loaded = data.load("tfds:cifar100", classes="cifar100_manmade", data_dir=str(tmp_path))
        got = labels_of(loaded)
    manmade, mapping = data.resolve_classes("cifar100_manmade", [str(i) for i in range(100)], "tfds:cifar100")
    expected = [mapping[y] for y in raw if y in mapping]
    assert loaded.info.num_classes == 30 and loaded.info.num_examples == len(expected) > 0
    assert got.tolist() == expected
    assert "TFDS cifar100" in loaded.info.provenance


def test_tfds_imagenet_natural_variable_size_and_test_split(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        raw = [int(y) for _, y in tfds.load("imagenet2012", split="validation", as_supervised=True)]
        loaded = data.load("tfds:imagenet2012", split="test", classes="imagenet_natural", data_dir=str(tmp_path))
        labels = labels_of(loaded)
        pipe = data.make_pipeline(loaded, batch_size=8, image_size=(16, 16), resize_mode="crop", one_hot=False)
        batches = list(pipe.as_numpy_iterator())
    natural = set(data.resolve_classes("imagenet_natural", [str(i) for i in range(1000)], "tfds:imagenet2012")[0])
    assert "'validation'" in loaded.info.provenance and loaded.info.num_classes == 449
    assert loaded.info.num_examples == len(labels) == sum(y in natural for y in raw) > 0
    assert all(x.shape[1:] == (16, 16, 3) and x.dtype == np.float32 for x, _ in batches)
    assert sorted(np.concatenate([y for _, y in batches]).tolist()) == sorted(labels.tolist())


def test_tfds_max_per_class_keeps_first_in_stream_order(tmp_path):
    with tfds.testing.mock_data(num_examples=100):
        raw = [int(y) for _, y in tfds.load("cifar10", split="train", as_supervised=True)]
        loaded = data.load("tfds:cifar10", classes=[2, 5], max_per_class=3, data_dir=str(tmp_path))
        got = labels_of(loaded)
        with pytest.raises(ValueError, match="max_per_class=99 is larger than the"):
            data.load("tfds:cifar10", max_per_class=99, data_dir=str(tmp_path))
    expected = [{2: 0, 5: 1}[y] for y in raw if y in (2, 5)]
    expected = [y for i, y in enumerate(expected) if expected[:i].count(y) < 3]
    assert loaded.info.num_examples == 6 and got.tolist() == expected


def test_tfds_not_prepared_and_unknown(tmp_path):
    expected = f"not prepared in {re.escape(str(tmp_path))}.*`tfds build cifar10 --data_dir=DIR`"
    with pytest.raises(FileNotFoundError, match=expected):
        data.load("tfds:cifar10", data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="place its archives in manual_dir="):
        data.load("tfds:imagenet2012", data_dir=str(tmp_path), download=False)
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_set'"):
        data.load("tfds:no_such_set")


def test_unknown_spec_lists_available():
    with pytest.raises(ValueError, match=r"unknown dataset spec 'mnist'; available: \['fashion_mnist'"):
        data.load("mnist")
    with pytest.raises(ValueError, match="max_per_class=0 must be a positive integer"):
        data.load("digits", max_per_class=0)
