"""Class splits: named subsets of a dataset's classes, re-indexed 0..k-1 in sorted original order.

Named splits (see `list_class_splits()`):

- `imagenet_natural` / `imagenet_manmade`: Yosinski et al. (2014) split of the 1000 ILSVRC-2012 classes
  (standard sorted-synset order): natural = indices 0-397, 936-958, 970, 972-998 (449); man-made = the other 551.
- `cifar100_manmade` / `cifar100_natural`: CIFAR-100 fine classes grouped by coarse label; man-made = the 6
  superclasses in `CIFAR100_MANMADE_SUPERCLASSES` (30 classes), natural = the other 14 (70 classes).
- `fashion_garments` / `fashion_accessories`: Fashion-MNIST clothes (0,1,2,3,4,6) vs. shoes and bags (5,7,8,9).
- `random_half:A:SEED` / `random_half:B:SEED`: any dataset; a seeded permutation of the k classes,
  A = its first k // 2 entries, B = the rest (Yosinski's similar-task control).

A named split used on a dataset with other classes (count or names) is a ValueError naming the datasets it is for.

Explicit selections: a list of class indices and/or names, or a comma-separated string ("0,3,5", "Bag,Sneaker").
"""

import dataclasses
import re

import numpy as np

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# CIFAR-100 fine labels in their standard (alphabetical) index order, grouped by coarse label; the
# coarse labels themselves are listed in their standard (alphabetical) index order 0..19.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_FINE_NAMES = sorted(n for names in CIFAR100_SUPERCLASSES.values() for n in names)
CIFAR100_COARSE_OF_FINE = [
    next(i for i, names in enumerate(CIFAR100_SUPERCLASSES.values()) if fine in names)
    for fine in CIFAR100_FINE_NAMES
]
CIFAR100_MANMADE_SUPERCLASSES = (
    "food_containers", "household_electrical_devices", "household_furniture",
    "large_man-made_outdoor_things", "vehicles_1", "vehicles_2",
)

IMAGENET_NATURAL = [*range(0, 398), *range(936, 959), 970, *range(972, 999)]


def _cifar100_by_coarse(manmade):
    coarse = [list(CIFAR100_SUPERCLASSES).index(s) for s in CIFAR100_MANMADE_SUPERCLASSES]
    return [i for i, c in enumerate(CIFAR100_COARSE_OF_FINE) if (c in coarse) == manmade]


ILSVRC_FIRST_LAST = ("n01440764", "n15075141")  # tench ... toilet tissue


def _is_ilsvrc(names):
    """ILSVRC-2012 class names: WordNet ids in sorted order from tench to toilet tissue (TFDS imagenet2012, an
    ImageNet class-folder tree)."""
    return (list(names) == sorted(names) and all(re.fullmatch(r"n\d{8}", n) for n in names)
            and (names[0], names[-1]) == ILSVRC_FIRST_LAST)


@dataclasses.dataclass(frozen=True)
class _NamedSplit:
    """num_classes and class names (a list, or a check) of the dataset a split is for; `tfds` names the TFDS
    builders that hold it (they may report placeholder names "0", "1", ... before their metadata exists)."""

    indices: list
    num_classes: int
    names: object
    datasets: str
    tfds: tuple
    embedded: tuple = ()  # the embedded dataset names (mk_keras.data.list_datasets) that hold it


_FASHION = dict(num_classes=10, names=FASHION_MNIST_CLASSES, datasets="fashion_mnist or tfds:fashion_mnist",
                tfds=("fashion_mnist",), embedded=("fashion_mnist",))
_CIFAR100 = dict(num_classes=100, names=CIFAR100_FINE_NAMES, datasets="tfds:cifar100", tfds=("cifar100",))
_IMAGENET = dict(num_classes=1000, names=_is_ilsvrc,
                 datasets="tfds:imagenet2012 (ILSVRC-2012)",
                 tfds=("imagenet2012", "imagenet2012_subset", "imagenet2012_real", "imagenet2012_corrupted",
                       "imagenet_v2", "imagenet_resized", "imagenet_sketch"))
_NAMED_SPLITS = {
    "imagenet_natural": _NamedSplit(IMAGENET_NATURAL, **_IMAGENET),
    "imagenet_manmade": _NamedSplit(sorted(set(range(1000)) - set(IMAGENET_NATURAL)), **_IMAGENET),
    "cifar100_manmade": _NamedSplit(_cifar100_by_coarse(True), **_CIFAR100),
    "cifar100_natural": _NamedSplit(_cifar100_by_coarse(False), **_CIFAR100),
    "fashion_garments": _NamedSplit([0, 1, 2, 3, 4, 6], **_FASHION),
    "fashion_accessories": _NamedSplit([5, 7, 8, 9], **_FASHION),
}
_RANDOM_HALF = re.compile(r"random_half:([AB]):(\d+)$")


def list_class_splits():
    """Names accepted by `classes=`, besides explicit index/name lists."""
    return [*_NAMED_SPLITS, "random_half:A:SEED", "random_half:B:SEED"]


def random_half(half, seed, num_classes):
    """Half 'A' (first k // 2) or 'B' (the rest) of a seeded permutation of range(num_classes), sorted."""
    perm = np.random.default_rng(seed).permutation(num_classes)
    part = perm[: num_classes // 2] if half == "A" else perm[num_classes // 2 :]
    return sorted(int(i) for i in part)


def _shown(names):
    return ", ".join(map(repr, list(names)[:3])) + (", ..." if len(names) > 3 else "")


def _tfds_builder(dataset):
    """The builder name of a "tfds:NAME[/CONFIG]" spec; None for other specs."""
    return dataset[len("tfds:"):].split("/")[0] if str(dataset).startswith("tfds:") else None


def _named(name, class_names, dataset, where):
    split = _NAMED_SPLITS[name]
    wrong = f"classes={name!r} is a split of {split.datasets} ({split.num_classes} classes"
    if len(class_names) != split.num_classes:
        raise ValueError(f"{wrong}); {where} has {len(class_names)} classes.")
    if all(n == str(i) for i, n in enumerate(class_names)):
        if _tfds_builder(dataset) not in split.tfds:
            raise ValueError(f"{wrong}); {where} has classes {_shown(class_names)}.")
        return list(split.indices)
    matches = split.names(class_names) if callable(split.names) else list(class_names) == split.names
    if not matches:
        expected = _shown(split.names) if not callable(split.names) else "1000 sorted WordNet ids"
        raise ValueError(f"{wrong}: {expected}); {where} has classes {_shown(class_names)}.")
    return list(split.indices)


def _explicit(items, class_names, where):
    index_of = {n: i for i, n in enumerate(class_names)}
    out = set()
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.strip().isdigit()):
            i = int(item)
            if not 0 <= i < len(class_names):
                raise ValueError(f"class index {i} is out of range for {where} (0..{len(class_names) - 1}).")
            out.add(i)
        elif isinstance(item, str) and item.strip() in index_of:
            out.add(index_of[item.strip()])
        else:
            shown = ", ".join(map(repr, class_names[:12])) + (", ..." if len(class_names) > 12 else "")
            raise ValueError(f"unknown class {item!r} in {where}; class names are {shown}.")
    return sorted(out)


def check_named_split(classes, dataset):
    """Before any data is read: a named split (`classes`, or a one-item list of it) given for an embedded dataset
    or a TFDS builder it is not a split of is a ValueError naming both. Folder and synthetic datasets are checked
    by `resolve_classes` when loaded (their class names are in the data)."""
    if isinstance(classes, (list, tuple)) and len(classes) == 1:
        classes = classes[0]
    if not isinstance(classes, str) or classes not in _NAMED_SPLITS:
        return
    split, dataset = _NAMED_SPLITS[classes], str(dataset)
    if dataset.startswith("tfds:"):
        fits = _tfds_builder(dataset) in split.tfds
    elif ":" not in dataset:
        fits = dataset in split.embedded
    else:
        return
    if not fits:
        raise ValueError(f"classes={classes!r} is a split of {split.datasets}, not of dataset {dataset!r}")


def resolve_classes(classes, class_names, dataset=None, split=None):
    """Resolve a `classes=` spec against a dataset's class names, without loading any data.

    Args:
      classes: None (all), a named split (`list_class_splits()`), "random_half:A|B:SEED", a list of
        indices/names, or a comma-separated string of indices/names.
      class_names: the dataset's class names in original label order.
      dataset: the dataset spec (`data.load`'s), for messages and named splits: a named split needs the class
        count and names of the dataset it is for; placeholder names ("0", "1", ...) pass only for the TFDS
        builders that hold that dataset (e.g. "tfds:cifar100" before its metadata exists).
      split: the split name, for messages.

    Returns:
      (sorted list of original indices, {original index: new index 0..k-1}).
    """
    where = f"a dataset with {len(class_names)} classes" if dataset is None else str(dataset)
    where += f"[{split}]" if split is not None else ""
    if classes is None:
        indices = list(range(len(class_names)))
    elif isinstance(classes, str) and classes in _NAMED_SPLITS:
        indices = _named(classes, class_names, dataset, where)
    elif isinstance(classes, str) and classes.startswith("random_half"):
        match = _RANDOM_HALF.match(classes)
        if not match:
            raise ValueError(f"classes={classes!r} is malformed; use 'random_half:A:SEED' or 'random_half:B:SEED'.")
        indices = random_half(match.group(1), int(match.group(2)), len(class_names))
    elif isinstance(classes, str):
        items = [c for c in classes.split(",") if c.strip()]
        if "," not in classes and classes.strip() not in class_names and not classes.strip().isdigit():
            raise ValueError(
                f"unknown classes={classes!r}; use one of {list_class_splits()}, or class indices/names "
                "(a list or a comma-separated string)."
            )
        indices = _explicit(items, class_names, where)
    elif isinstance(classes, (list, tuple, np.ndarray)):
        indices = _explicit(list(classes), class_names, where)
    else:
        raise ValueError(f"classes={classes!r} must be None, a split name, a string or a list of indices/names.")
    if not indices:
        raise ValueError(f"classes={classes!r} selects no class of {where}.")
    return indices, {orig: new for new, orig in enumerate(indices)}
