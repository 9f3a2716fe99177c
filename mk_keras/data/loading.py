"""`load(spec, ...)`: a dataset spec + class selection -> an unbatched labelled tf.data.Dataset with metadata."""

import dataclasses
import logging
from typing import Optional

import numpy as np
import tensorflow as tf

from mk_keras.data import sources, synthetic
from mk_keras.data.splits import resolve_classes

log = logging.getLogger(__name__)

_EMBEDDED = ("fashion_mnist", "animal_mnist", "digits")


def list_datasets():
    """Accepted dataset specs: embedded names and the `tfds:` / `folder:` / `synthetic:` prefixes."""
    return [*_EMBEDDED, "tfds:NAME[/CONFIG]", "folder:PATH", synthetic.SPEC_FORMAT]


@dataclasses.dataclass
class DatasetInfo:
    """Metadata of a loaded dataset; class names and counts are after class selection and subsampling."""

    spec: str
    split: str
    class_names: list
    num_classes: int
    num_examples: int
    image_shape: tuple
    provenance: str
    class_mapping: dict
    classes_spec: object = None
    max_per_class: Optional[int] = None
    skipped_files: tuple = ()
    dropped_classes: tuple = ()

    def __str__(self):
        names = ", ".join(self.class_names[:6]) + (", ..." if self.num_classes > 6 else "")
        shape = "x".join("?" if d is None else str(d) for d in self.image_shape)
        sel = "" if self.classes_spec is None else f" classes={self.classes_spec!r}"
        cap = "" if self.max_per_class is None else f" max_per_class={self.max_per_class}"
        dropped = f" (dropped empty: {', '.join(self.dropped_classes)})" if self.dropped_classes else ""
        return (
            f"{self.spec}[{self.split}]{sel}{cap}: {self.num_classes} classes{dropped} ({names}), "
            f"{self.num_examples} examples, images {shape} uint8; {self.provenance}"
        )


@dataclasses.dataclass
class Encoded:
    """The examples of `of` (a `LoadedDataset.dataset`), in its order, before decoding: image files (`paths`, with
    `labels`) or a `dataset` of (encoded image bytes, int64 label). Valid only for that dataset object: a
    `LoadedDataset` whose `dataset` was replaced (subset, truncated) no longer matches it."""

    of: tf.data.Dataset
    paths: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    dataset: Optional[tf.data.Dataset] = None


@dataclasses.dataclass
class LoadedDataset:
    """`dataset` yields (image uint8 [H,W,C], label int64 in 0..num_classes-1), unbatched; `encoded`: the same
    examples undecoded (image folders and TFDS), for streaming pipelines; see `encoded_form()`."""

    dataset: tf.data.Dataset
    info: DatasetInfo
    encoded: Optional[Encoded] = None

    def encoded_form(self):
        """`encoded` if it still describes `dataset`, else None."""
        return self.encoded if self.encoded is not None and self.encoded.of is self.dataset else None

    def __repr__(self):
        return f"LoadedDataset({self.info})"

    __str__ = __repr__


def _source(spec, split, data_dir, manual_dir, download):
    if spec == "fashion_mnist":
        return sources.fashion_mnist(split, data_dir=data_dir, download=download)
    if spec == "animal_mnist":
        return sources.animal_mnist(split)
    if spec == "digits":
        return sources.digits(split)
    if spec.startswith("tfds:") and len(spec) > 5:
        return sources.tfds_source(spec[5:], split, data_dir=data_dir, manual_dir=manual_dir, download=download)
    if spec.startswith("folder:") and len(spec) > 7:
        return sources.folder(spec[7:], split)
    if spec.startswith(synthetic.PREFIX):
        return synthetic.source(spec[len(synthetic.PREFIX):], split)
    raise ValueError(f"unknown dataset spec {spec!r}; available: {list_datasets()}.")


def _check_cap(max_per_class, counts, indices, class_names, where):
    if max_per_class is None:
        return
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, (int, np.integer)) or max_per_class < 1:
        raise ValueError(f"max_per_class={max_per_class!r} must be a positive integer or None.")
    smallest = min(indices, key=lambda i: counts[i])
    if max_per_class > counts[smallest]:
        raise ValueError(
            f"max_per_class={max_per_class} is larger than the {counts[smallest]} examples of class "
            f"{class_names[smallest]!r} in {where}; use at most {counts[smallest]}."
        )


def _without_empty(src, indices, counts, drop, where):
    """`indices` less the classes with no example (when `drop`, with a warning); else a ValueError naming them."""
    empty = [i for i in indices if counts[i] == 0]
    if not empty:
        return indices, ()
    names = tuple(src.class_names[i] for i in empty)
    why = "; ".join(f"{src.class_names[i]!r}" + (f": {src.empty_reasons[i]}" if i in src.empty_reasons else "")
                    for i in empty[:5]) + (f"; and {len(empty) - 5} more" if len(empty) > 5 else "")
    if not drop:
        raise ValueError(f"{where} has no example of class(es) {why}; remove them from the selection, fix the "
                         "data, or pass drop_empty_classes=True to drop them")
    kept = [i for i in indices if counts[i] > 0]
    if not kept:
        raise ValueError(f"{where}: every selected class is empty ({why}).")
    log.warning("%s: dropped %d class(es) without an example, labels re-indexed: %s", where, len(empty), why)
    return kept, names


def _in_memory(src, indices, mapping, max_per_class, seed):
    rng = np.random.default_rng(seed)
    keep = []
    for i in indices:
        members = np.flatnonzero(src.labels == i)
        if max_per_class is not None:
            members = rng.choice(members, max_per_class, replace=False)
        keep.append(members)
    keep = np.sort(np.concatenate(keep))
    remap = np.full(len(src.class_names), -1, np.int64)
    remap[list(mapping)] = list(mapping.values())
    items, labels = src.items[keep], remap[src.labels[keep]]
    ds = tf.data.Dataset.from_tensor_slices((items, labels))
    if src.decode is None:
        return ds, None, len(keep)
    ds = ds.map(lambda p, y: (src.decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds, Encoded(of=ds, paths=items, labels=labels), len(keep)


def _cap_per_class(ds, num_classes, max_per_class):
    """Keep the first `max_per_class` examples of each (new) label in stream order."""

    def step(counts, example):
        x, y = example
        counts = tf.tensor_scatter_nd_add(counts, [[y]], tf.ones([1], tf.int64))
        return counts, (x, y, counts[y])

    ds = ds.scan(tf.zeros([num_classes], tf.int64), step)
    return ds.filter(lambda x, y, n: n <= max_per_class).map(lambda x, y, n: (x, y))


def _streamed(dataset, mapping, max_per_class, counts, num_examples):
    """Filter and re-index a streamed source; `counts` (per original class) is None only for 'everything'."""
    if counts is None:
        return dataset, num_examples
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(mapping), tf.int64), tf.constant(list(mapping.values()), tf.int64)
        ),
        default_value=-1,
    )
    ds = dataset.map(lambda x, y: (x, table.lookup(tf.cast(y, tf.int64))), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda x, y: y >= 0)
    if max_per_class is None:
        return ds, int(sum(counts[i] for i in mapping))
    ds = _cap_per_class(ds, len(mapping), max_per_class)
    return ds, int(sum(min(counts[i], max_per_class) for i in mapping))


def load(
    spec,
    split="train",
    classes=None,
    max_per_class=None,
    seed=0,
    data_dir=None,
    manual_dir=None,
    download=True,
    drop_empty_classes=False,
):
    """Load a labelled image dataset, optionally restricted to a class split.

    Args:
      spec: "fashion_mnist", "animal_mnist", "digits", "tfds:NAME[/CONFIG]", "folder:PATH" or generated
        "synthetic:K:HxWxC:N[:jpeg]" (`mk_keras.data.synthetic`; `list_datasets()`).
      split: "train" or "test"; TFDS also takes its own split names ("validation", "train[:10%]", ...) and
        maps "test" to "validation" where the test split is missing or unlabelled (imagenet2012).
      classes: a class selection for `resolve_classes` (named split, index/name list, ...); labels are
        re-indexed 0..k-1 in sorted order of the original index.
      max_per_class: keep at most this many examples per selected class: a seeded random subset for
        in-memory sources, the first ones in file order for TFDS. Larger than a class holds -> ValueError.
      seed: picks which examples the `max_per_class` subset of an in-memory source keeps, and nothing else
        (the train/test split of datasets without an official one is fixed; TFDS subsets and the order of
        the examples do not depend on it).
      data_dir: TFDS data dir; for fashion_mnist an extra folder searched first for the IDX files.
      manual_dir: TFDS manual download dir (imagenet2012, ...).
      download: allow TFDS / keras.datasets to download when the data is missing.
      drop_empty_classes: a selected class without an example in this split (an empty or all-undecodable
        class folder) is a ValueError naming it; True drops such classes with a warning instead (labels
        re-indexed over the rest, see `info.class_mapping`; names in `info.dropped_classes`). In-memory
        sources only (TFDS classes are not counted for this).

    Returns:
      `LoadedDataset` with `.dataset` ((uint8 [H,W,C], int64) pairs, unbatched) and `.info` (`DatasetInfo`).
    """
    if not isinstance(spec, str):
        raise ValueError(f"dataset spec must be a string, got {spec!r}; available: {list_datasets()}.")
    src = _source(spec, split, data_dir, manual_dir, download)
    where = f"{spec}[{split}]"
    indices, mapping = resolve_classes(classes, src.class_names, spec, split)
    dropped = ()
    if src.items is not None:
        counts = np.bincount(src.labels, minlength=len(src.class_names))
        indices, dropped = _without_empty(src, indices, counts, drop_empty_classes, where)
        mapping = {orig: new for new, orig in enumerate(indices)}
        _check_cap(max_per_class, counts, indices, src.class_names, where)
        ds, encoded, num_examples = _in_memory(src, indices, mapping, max_per_class, seed)
    else:
        counts = None
        if max_per_class is not None or len(indices) < len(src.class_names) or src.num_examples is None:
            counts = src.count_labels()
            _check_cap(max_per_class, counts, indices, src.class_names, where)
        ds, num_examples = _streamed(src.dataset, mapping, max_per_class, counts, src.num_examples)
        encoded = None
        if src.encoded is not None:
            encoded = Encoded(of=ds, dataset=_streamed(src.encoded, mapping, max_per_class, counts,
                                                       src.num_examples)[0])
    info = DatasetInfo(
        spec=spec,
        split=split,
        class_names=[src.class_names[i] for i in indices],
        num_classes=len(indices),
        num_examples=num_examples,
        image_shape=tuple(src.image_shape),
        provenance=src.provenance,
        class_mapping=mapping,
        classes_spec=classes,
        max_per_class=max_per_class,
        skipped_files=src.skipped_files,
        dropped_classes=dropped,
    )
    return LoadedDataset(dataset=ds, info=info, encoded=encoded)
