"""Class split tables and `resolve_classes` (no data needed)."""

import re

import pytest

from mk_keras.data import list_class_splits, random_half, resolve_classes
from mk_keras.data import splits

# WordNet ids shaped like ILSVRC-2012's: sorted, from tench (n01440764) to toilet tissue (n15075141).
IMAGENET = ["n01440764", *[f"n{1440765 + i:08d}" for i in range(998)], "n15075141"]
CIFAR100 = splits.CIFAR100_FINE_NAMES
FASHION = splits.FASHION_MNIST_CLASSES

# The standard CIFAR-100 fine -> coarse table (as in the dataset's train/test pickles), written out
# independently of the superclass dictionary it is checked against.
CIFAR100_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def test_imagenet_split_551_449_disjoint_and_complete():
    natural, _ = resolve_classes("imagenet_natural", IMAGENET)
    manmade, mapping = resolve_classes("imagenet_manmade", IMAGENET)
    assert (len(manmade), len(natural)) == (551, 449)
    assert not set(manmade) & set(natural)
    assert sorted(manmade + natural) == list(range(1000))
    assert {397, 936, 958, 970, 972, 998} <= set(natural)
    assert {398, 935, 959, 969, 971, 999} <= set(manmade)
    assert mapping[398] == 0 and mapping[999] == 550
    assert list(mapping) == manmade and list(mapping.values()) == list(range(551))


def test_cifar100_tables():
    assert len(CIFAR100) == 100 and CIFAR100 == sorted(CIFAR100)
    assert CIFAR100[:3] == ["apple", "aquarium_fish", "baby"] and CIFAR100[-1] == "worm"
    assert splits.CIFAR100_COARSE_OF_FINE == CIFAR100_COARSE
    manmade, _ = resolve_classes("cifar100_manmade", CIFAR100)
    natural, _ = resolve_classes("cifar100_natural", CIFAR100)
    assert (len(manmade), len(natural)) == (30, 70)
    assert sorted(manmade + natural) == list(range(100))
    names = {CIFAR100[i] for i in manmade}
    assert {"bottle", "television", "wardrobe", "skyscraper", "train", "tractor"} <= names
    assert not {"apple", "oak_tree", "whale", "baby"} & names


def test_fashion_splits():
    garments, mapping = resolve_classes("fashion_garments", FASHION)
    accessories, _ = resolve_classes("fashion_accessories", FASHION)
    assert garments == [0, 1, 2, 3, 4, 6] and accessories == [5, 7, 8, 9]
    assert mapping == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: 5}


def test_random_half_is_seeded_complementary_and_sized():
    a, _ = resolve_classes("random_half:A:3", IMAGENET)
    b, _ = resolve_classes("random_half:B:3", IMAGENET)
    assert len(a) == len(b) == 500 and sorted(a + b) == list(range(1000))
    assert a == random_half("A", 3, 1000)
    assert a != random_half("A", 4, 1000)
    odd_a, odd_b = random_half("A", 0, 7), random_half("B", 0, 7)
    assert (len(odd_a), len(odd_b)) == (3, 4)


@pytest.mark.parametrize(
    "classes, expected",
    [
        ([8, 7], [7, 8]),
        ("0,3,5", [0, 3, 5]),
        ("Bag,Sneaker", [7, 8]),
        ("Bag", [8]),
        (["Ankle boot", 0], [0, 9]),
        (None, list(range(10))),
    ],
)
def test_explicit_selections(classes, expected):
    indices, mapping = resolve_classes(classes, FASHION)
    assert indices == expected and list(mapping.values()) == list(range(len(expected)))


@pytest.mark.parametrize(
    "classes, names, message",
    [
        ("imagenet_natural", FASHION, "is a split of tfds:imagenet2012 (ILSVRC-2012) (1000 classes); somedata has "
                                      "10 classes."),
        ("imagenet_natural", [f"n{i:08d}" for i in range(1000)], "(1000 classes: 1000 sorted WordNet ids); "
                                                                 "somedata has classes 'n00000000'"),
        ("fashion_garments", [f"c{i}" for i in range(10)], "is a split of fashion_mnist or tfds:fashion_mnist (10 "
                                                           "classes: 'T-shirt/top', 'Trouser', 'Pullover', ...); "
                                                           "somedata has classes 'c0', 'c1', 'c2', ..."),
        ("cifar100_natural", FASHION, "is a split of tfds:cifar100 (100 classes); somedata has 10 classes."),
        ("cifar100_natural", list(reversed(CIFAR100)), "somedata has classes 'worm', 'woman', 'wolf', ..."),
        ("Handbag", FASHION, "unknown classes='Handbag'"),
        ("Bag,Handbag", FASHION, "unknown class 'Handbag'"),
        ([3, 10], FASHION, "class index 10 is out of range"),
        ([], FASHION, "selects no class"),
        ("random_half:C:1", FASHION, "malformed"),
        (3.5, FASHION, "must be None"),
    ],
)
def test_bad_selections(classes, names, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_classes(classes, names, "somedata")


def test_placeholder_names_pass_only_for_the_tfds_builders_of_the_split():
    # TFDS reports "0".."99" while its metadata is not generated (e.g. under tfds.testing.mock_data).
    placeholders = [str(i) for i in range(100)]
    assert len(resolve_classes("cifar100_manmade", placeholders, "tfds:cifar100")[0]) == 30
    assert len(resolve_classes("imagenet_natural", [str(i) for i in range(1000)], "tfds:imagenet_v2/matched-"
                               "frequency")[0]) == 449
    for dataset in (None, "folder:/data/c100", "tfds:caltech101"):
        with pytest.raises(ValueError, match="is a split of tfds:cifar100 .* has classes '0', '1', '2', ..."):
            resolve_classes("cifar100_manmade", placeholders, dataset)
    # scikit-learn's digits really are named "0".."9": not Fashion-MNIST.
    with pytest.raises(ValueError, match=r"classes='fashion_garments' is a split of fashion_mnist or "
                                         r"tfds:fashion_mnist \(10 classes\); digits\[train\] has classes '0'"):
        resolve_classes("fashion_garments", [str(i) for i in range(10)], "digits", "train")


def test_listing():
    assert {"imagenet_manmade", "imagenet_natural", "cifar100_manmade", "cifar100_natural",
            "fashion_garments", "fashion_accessories", "random_half:A:SEED"} <= set(list_class_splits())
