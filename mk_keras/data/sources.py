"""Data sources: each returns a `Source` of uint8 images with their original integer labels.

In-memory sources (fashion_mnist, animal_mnist, digits, folder) hold every label up front, so class
selection and `max_per_class` are exact and seeded. TFDS sources stream from disk; their per-class counts
come from one label-only pass (cached next to the prepared data).
"""

import dataclasses
import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import pickle
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from mk_keras.data.splits import FASHION_MNIST_CLASSES

log = logging.getLogger(__name__)

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ANIMAL_MNIST_CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]
# Datasets without an official split: this fraction of each class is the test split (see stratified_split).
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# TFDS datasets whose "test" split is unlabelled, so split="test" means their validation split.
_TFDS_TEST_IS_VALIDATION = {"imagenet2012", "imagenet2012_subset", "imagenet2012_real"}


@dataclasses.dataclass
class Source:
    """Raw data of one split before class selection.

    In-memory: `items` (images uint8 [N,H,W,C], or file paths decoded by `decode`) and `labels` int64 [N];
    `empty_reasons`: {class index: why it has no example in this split} (folders).
    Streamed: `dataset` of (uint8 image, int64 label), `encoded` (the same examples as (encoded image bytes, int64
    label), undecoded), `num_examples`, and `count_labels()` -> per-class counts.
    """

    class_names: list
    image_shape: tuple
    provenance: str
    items: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    decode: Optional[Callable] = None
    skipped_files: tuple = ()
    empty_reasons: dict = dataclasses.field(default_factory=dict)
    dataset: Optional[tf.data.Dataset] = None
    encoded: Optional[tf.data.Dataset] = None
    num_examples: Optional[int] = None
    count_labels: Optional[Callable[[], np.ndarray]] = None


def _check_split(split, allowed, name):
    if split not in allowed:
        raise ValueError(f"split={split!r} is not available for {name}; use one of {list(allowed)}.")


def stratified_split(labels, split, keys=None, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Indices (sorted) of a deterministic, stratified train/test split for data without an official one.

    Per class, round(test_fraction * n) examples go to test: groups of identical `keys` (e.g. content
    hashes, so exact duplicates never straddle the split) are visited in a seeded random order and taken
    while they fit. The rest is train.
    """
    keys = np.arange(len(labels)) if keys is None else np.asarray(keys)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        groups = {}
        for i in members:
            groups.setdefault(keys[i], []).append(int(i))
        target = round(test_fraction * len(members))
        taken = 0
        for g in rng.permutation(len(groups)):
            group = list(groups.values())[g]
            if taken + len(group) <= target:
                test.extend(group)
                taken += len(group)
    test = np.sort(np.asarray(test, dtype=np.int64))
    if split == "test":
        return test
    return np.setdiff1d(np.arange(len(labels)), test)


# --- Fashion-MNIST -----------------------------------------------------------------------------------


def _read_idx(path):
    """Parse a gzipped IDX file (ubyte data) into a read-only numpy array; kept in memory while the file is
    unchanged (a sweep reads the same files for every run)."""
    stat = os.stat(path)
    return _read_idx_file(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_idx_file(path, mtime_ns, size):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes.")
    return data.reshape(shape)


def _keras_cache_dir(subdir):
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets", subdir)


def fashion_mnist_dirs(data_dir=None):
    """Folders searched for the Fashion-MNIST IDX files, in order."""
    dirs = [FASHION_MNIST_DEBIAN_DIR, _keras_cache_dir("fashion-mnist")]
    return ([data_dir] if data_dir else []) + dirs


def fashion_mnist(split, data_dir=None, download=True):
    _check_split(split, FASHION_MNIST_FILES, "fashion_mnist")
    names = FASHION_MNIST_FILES[split]
    dirs = fashion_mnist_dirs(data_dir)
    found = next((d for d in dirs if all(os.path.isfile(os.path.join(d, n)) for n in names)), None)
    how = None
    if found is None and download:
        import keras

        try:
            keras.datasets.fashion_mnist.load_data()
            found, how = _keras_cache_dir("fashion-mnist"), "downloaded by keras.datasets.fashion_mnist"
        except Exception as e:  # no internet, proxy, ...: report below with the install command
            log.info("keras.datasets.fashion_mnist download failed: %s", e)
    if found is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files {names} not found in {dirs} and not downloadable; "
            "install them with: sudo apt-get install dataset-fashion-mnist"
        )
    images = _read_idx(os.path.join(found, names[0]))[..., None]
    labels = _read_idx(os.path.join(found, names[1])).astype(np.int64)
    if how is None:
        how = "Debian package dataset-fashion-mnist" if found == FASHION_MNIST_DEBIAN_DIR else "IDX files"
    return Source(
        class_names=list(FASHION_MNIST_CLASSES),
        image_shape=images.shape[1:],
        provenance=f"Fashion-MNIST {split}, {how} in {found}",
        items=images,
        labels=labels,
    )


# --- Animal-MNIST and digits (no official split) ------------------------------------------------------


def _content_keys(images):
    return np.array([hashlib.sha1(x.tobytes()).hexdigest() for x in images])


def _split_note():
    return (
        f"no official split: deterministic stratified split, {TEST_FRACTION:.0%} of each class is test "
        f"(seed {SPLIT_SEED}, exact duplicates kept on one side)"
    )


def animal_mnist(split):
    _check_split(split, ("train", "test"), "animal_mnist")
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None:
        raise FileNotFoundError("Animal-MNIST is not installed; install it with: pip install animal-mnist")
    folder = os.path.join(spec.submodule_search_locations[0], "data", "Animal_MNIST")
    data_path = os.path.join(folder, "animal_data_version_3.gz")
    label_path = os.path.join(folder, "animal_label_version_3.gz")
    if not (os.path.isfile(data_path) and os.path.isfile(label_path)):
        raise FileNotFoundError(f"Animal-MNIST files missing in {folder}; reinstall with: pip install animal-mnist")
    # The package ships gzipped pickles of numpy arrays; this is how its own loader reads them.
    with gzip.open(data_path, "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(label_path, "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=np.int64)
    idx = stratified_split(labels, split, keys=_content_keys(images))
    version = importlib.metadata.version("animal-mnist")
    return Source(
        class_names=list(ANIMAL_MNIST_CLASSES),
        image_shape=images.shape[1:] + (1,),
        provenance=f"Animal-MNIST {split}, PyPI animal-mnist {version} ({data_path}); {_split_note()}",
        items=images[idx][..., None],
        labels=labels[idx],
    )


def digits(split):
    """scikit-learn's 8x8 digits; pixel values 0..16 are scaled to 0..255."""
    _check_split(split, ("train", "test"), "digits")
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    idx = stratified_split(labels, split, keys=_content_keys(images))
    return Source(
        class_names=[str(n) for n in bunch.target_names],
        image_shape=(8, 8, 1),
        provenance=f"digits {split}, scikit-learn {sklearn.__version__} load_digits (0..16 scaled to 0..255); "
        + _split_note(),
        items=images[idx][..., None],
        labels=labels[idx],
    )


# --- Image folders ------------------------------------------------------------------------------------


_SPLIT_DIRS = ("train", "test", "val", "validation")


def _file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _decode_file(path):
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


# Above this many files a folder's JPEGs are checked by their header only: decoding all of ImageNet's 1.28M
# training images takes about 20 minutes on 16 cores, at every load.
FULL_DECODE_CHECK_MAX = 50_000


def _header_or_decode(data):
    return tf.cond(tf.io.is_jpeg(data), lambda: tf.image.extract_jpeg_shape(data)[0],
                   lambda: tf.shape(tf.io.decode_image(data, channels=3, expand_animations=False))[0])


def _decodable(paths):
    """Boolean mask: which files TensorFlow can decode (one parallel pass; JPEG headers only for more than
    `FULL_DECODE_CHECK_MAX` files, where a JPEG whose body is damaged fails later, when it is read)."""
    full = len(paths) <= FULL_DECODE_CHECK_MAX
    if not full:
        log.info("checking the headers of %d JPEG files (more than %d: not decoded)", len(paths),
                 FULL_DECODE_CHECK_MAX)

    def check(i):
        path = tf.gather(paths, i)
        return i, tf.shape(_decode_file(path))[0] if full else _header_or_decode(tf.io.read_file(path))

    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(paths))).map(check, num_parallel_calls=tf.data.AUTOTUNE)
    ok = np.zeros(len(paths), bool)
    for i, _ in ds.ignore_errors().as_numpy_iterator():
        ok[i] = True
    return ok


def _class_folders(root):
    """Class folder names under `root`, as `keras.utils.image_dataset_from_directory` lists them."""
    return [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")]


def folder(path, split):
    """Class-per-folder image tree, decoded to RGB uint8.

    Layout PATH/SPLIT/CLASS/*.jpg when PATH has train/test/val/validation subfolders (the classes are the class
    folders of all of them, so labels agree across splits); otherwise
    PATH/CLASS/*.jpg with the deterministic stratified split (identical files kept on one side). Files are listed by
    `keras.utils.image_dataset_from_directory` (.bmp .gif .jpeg .jpg .png). Files TensorFlow cannot decode
    are skipped, counted in `skipped_files` and logged; classes left without an example get a reason in
    `empty_reasons` (`load` refuses or drops them).
    """
    import keras

    if not os.path.isdir(path):
        raise FileNotFoundError(f"image folder {path!r} does not exist.")
    split_dirs = sorted(d for d in _SPLIT_DIRS if os.path.isdir(os.path.join(path, d)))
    has_split_dirs = bool(split_dirs)
    if has_split_dirs:
        _check_split(split, split_dirs, f"folder:{path}")
        root = os.path.join(path, split)
    else:
        _check_split(split, ("train", "test"), f"folder:{path} (no split subfolders)")
        root = path
    try:
        listing = keras.utils.image_dataset_from_directory(
            root, labels="inferred", batch_size=None, shuffle=False, verbose=False
        )
    except ValueError as e:
        raise FileNotFoundError(f"no images (.bmp .gif .jpeg .jpg .png) in class folders under {root!r}.") from e
    class_names = list(listing.class_names)
    if not class_names:
        raise FileNotFoundError(f"no class subfolders under {root!r}; expected {root}/CLASS/IMAGE files.")
    if has_split_dirs:  # every split gets the same labels: the class folders of all split folders
        class_names = sorted({c for d in split_dirs for c in _class_folders(os.path.join(path, d))})
    paths = np.array(listing.file_paths)
    labels = np.array([class_names.index(os.path.relpath(p, root).split(os.sep)[0]) for p in paths], np.int64)
    files = np.bincount(labels, minlength=len(class_names))
    note = f"split folder {root}"
    if not has_split_dirs:
        idx = stratified_split(labels, split, keys=[_file_hash(p) for p in paths])
        paths, labels = paths[idx], labels[idx]
        note = _split_note()
    in_split = np.bincount(labels, minlength=len(class_names))
    ok = _decodable(paths)
    skipped = tuple(str(p) for p in paths[~ok])
    if skipped:
        log.warning("folder:%s: skipped %d file(s) TensorFlow cannot decode, e.g. %s", path, len(skipped), skipped[0])
    paths, labels = paths[ok], labels[ok]
    decoded = np.bincount(labels, minlength=len(class_names))
    reasons = {}
    for i in np.flatnonzero(decoded == 0):
        folder_path = os.path.join(root, class_names[i])
        if not os.path.isdir(folder_path):
            reasons[int(i)] = f"there is no folder {folder_path} (only in other split folders)"
        elif files[i] == 0:
            reasons[int(i)] = f"{folder_path} holds no image file"
        elif in_split[i] == 0:
            reasons[int(i)] = f"the {files[i]} image(s) of {folder_path} all fall in the other split"
        else:
            reasons[int(i)] = f"none of the {in_split[i]} image(s) in {folder_path} can be decoded"
    if len(paths) == 0:
        raise FileNotFoundError(f"no decodable images under {root!r} ({len(skipped)} corrupt).")
    return Source(
        class_names=class_names,
        image_shape=(None, None, 3),
        provenance=f"image folder {path} [{split}], {len(paths)} files, {len(skipped)} undecodable skipped; {note}",
        items=paths,
        labels=labels,
        decode=_decode_file,
        skipped_files=skipped,
        empty_reasons=reasons,
    )


# --- TFDS ---------------------------------------------------------------------------------------------


def _not_prepared(name, builder, manual_dir, reason):
    fix = f"run `tfds build {name} --data_dir=DIR` on a machine with internet, copy DIR here and pass data_dir=DIR"
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        where = manual_dir or os.path.join(builder.data_dir_root, "downloads", "manual")
        fix = f"place its archives in manual_dir={where} and retry, or copy a prepared DIR here and pass data_dir=DIR"
    return FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir} ({reason}); {fix}.")


def _label_counts(builder, split, image_key, label_key, num_classes):
    """Per-class example counts of a TFDS split from one label-only pass, cached beside prepared data."""
    import tensorflow_datasets as tfds

    cache = os.path.join(builder.data_dir, f"mk_keras_label_counts_{split.replace('/', '_')}.json")
    if builder.is_prepared() and os.path.isfile(cache):
        with open(cache) as f:
            return np.asarray(json.load(f), np.int64)
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
    counts = np.zeros(num_classes, np.int64)
    for y in ds.map(lambda ex: ex[label_key]).batch(8192).as_numpy_iterator():
        counts += np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes)
    if builder.is_prepared() and os.access(builder.data_dir, os.W_OK):
        with open(cache, "w") as f:
            json.dump(counts.tolist(), f)
    return counts


def tfds_source(name, split, data_dir=None, manual_dir=None, download=True):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"unknown TFDS dataset {name!r}; see tfds.list_builders().") from e
    except ValueError as e:
        raise ValueError(f"bad TFDS dataset/config {name!r}: {str(e).splitlines()[0]}") from e
    if not builder.is_prepared():
        if not download:
            raise _not_prepared(name, builder, manual_dir, "download=False")
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except Exception as e:  # network, missing manual files, ...: one clear message instead
            detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            reason = f"download failed: {type(e).__name__}" + (f": {detail}" if detail else "")
            raise _not_prepared(name, builder, manual_dir, reason) from e
    info = builder.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise ValueError(f"TFDS dataset {name!r} has no (image, label) supervised keys.")
    image_key, label_key = info.supervised_keys
    tfds_split = split
    if split == "test" and (builder.name in _TFDS_TEST_IS_VALIDATION or (info.splits and "test" not in info.splits)):
        tfds_split = "validation"
    if not hasattr(info.features[label_key], "names"):
        raise ValueError(f"TFDS dataset {name!r}: label feature {label_key!r} is not a ClassLabel.")
    class_names = list(info.features[label_key].names)
    num_examples = None
    if info.splits:
        try:
            num_examples = info.splits[tfds_split].num_examples
        except KeyError as e:
            raise ValueError(f"split={split!r} is not in TFDS {name!r}; available: {list(info.splits)}.") from e
    return Source(
        class_names=class_names,
        image_shape=tuple(info.features[image_key].shape),
        provenance=f"TFDS {builder.info.full_name} split {tfds_split!r} in {builder.data_dir}",
        dataset=builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False),
        encoded=builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False,
                                   decoders={image_key: tfds.decode.SkipDecoding()}),
        num_examples=num_examples,
        count_labels=lambda: _label_counts(builder, tfds_split, image_key, label_key, len(class_names)),
    )
