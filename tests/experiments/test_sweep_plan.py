"""Planning: runs, ids, depths, dependencies, and one-line errors for bad experiment definitions."""

import pytest

from mk_keras.experiments import SweepConfig, plan
from mk_keras.experiments.sweep import resolve_depths, train_kwargs

MODELS = ["convnext_micro_cifar", "resnet10_cifar"]  # 5 depthwise / 9 conv layers


def _config(**overrides):
    base = dict(name="t", classes_a="fashion_garments", classes_b="fashion_accessories", models=MODELS,
                treatments=["baseA", "baseB", "AnB", "BnB"], depths=["all"], seeds=[0])
    return SweepConfig(**{**base, **overrides})


def test_plan_runs_order_and_auto_kinds():
    p = plan(_config(seeds=[0, 1], treatments=["baseA", "baseB", "AnB", "BnB", "reversed"]))
    assert [(a.model, a.kind, a.layers) for a in p.arms] == [("convnext_micro_cifar", "depthwise", 5),
                                                           ("resnet10_cifar", "conv", 9)]
    per_seed = 4 + 3 * (5 + 9)
    assert len(p.runs) == 2 * per_seed
    assert len({r.run_id for r in p.runs}) == len(p.runs)
    # each seed: bases first, then transfers; every source is planned before its dependents
    assert [r.treatment for r in p.runs[:4]] == ["baseA", "baseB", "baseA", "baseB"]
    seen = set()
    for r in p.runs:
        assert r.source is None or r.source in seen
        seen.add(r.run_id)
    anb = next(r for r in p.runs if r.run_id == "resnet10_cifar-conv-AnB-n3-s1")
    assert (anb.source, anb.train_n) == ("resnet10_cifar-baseA-s1", 3)
    rev = next(r for r in p.runs if r.run_id == "convnext_micro_cifar-depthwise-reversed-n2-s0")
    assert rev.train_n == 4  # layers 2..5 frozen = the last 4
    kw = train_kwargs(rev, p.config, "/out")
    assert kw["order"] == "last" and kw["n"] == 4 and kw["freeze"] and kw["source"].endswith("baseA-s0")
    assert kw["classes"] == "fashion_accessories" and kw["dataset"] == "fashion_mnist"


def test_depth_tokens():
    assert resolve_depths(["all"], 5, "m") == (1, 2, 3, 4, 5)
    assert resolve_depths(["spread:5"], 9, "m") == (1, 3, 5, 7, 9)
    assert resolve_depths(["last"], 17, "m") == (17,)
    assert resolve_depths(["last", "1"], 5, "m") == (1, 5)
    assert resolve_depths(["spread:3", "2"], 18, "m") == (1, 2, 10, 18)
    assert resolve_depths(["spread:9"], 4, "m") == (1, 2, 3, 4)


def test_random_frozen_plus_and_source_sizes():
    p = plan(_config(models=["convnext_micro_cifar"], depths=["1", "5"], source_sizes=[100, 300],
                     treatments=["baseA", "baseB", "AnB+", "random_frozen"]))
    ids = [r.run_id for r in p.runs]
    assert ids == ["convnext_micro_cifar-baseA-a100-s0", "convnext_micro_cifar-baseA-a300-s0",
                   "convnext_micro_cifar-baseB-s0",
                   "convnext_micro_cifar-depthwise-AnB+-a100-n1-s0", "convnext_micro_cifar-depthwise-AnB+-a100-n5-s0",
                   "convnext_micro_cifar-depthwise-AnB+-a300-n1-s0", "convnext_micro_cifar-depthwise-AnB+-a300-n5-s0",
                   "convnext_micro_cifar-depthwise-random_frozen-n1-s0",
                   "convnext_micro_cifar-depthwise-random_frozen-n5-s0"]
    by_id = {r.run_id: r for r in p.runs}
    assert train_kwargs(by_id["convnext_micro_cifar-baseA-a300-s0"], p.config, "/o")["max_per_class"] == 300
    plus = train_kwargs(by_id["convnext_micro_cifar-depthwise-AnB+-a100-n5-s0"], p.config, "/o")
    assert plus["freeze"] is False and plus["source"].endswith("baseA-a100-s0")
    rnd = train_kwargs(by_id["convnext_micro_cifar-depthwise-random_frozen-n5-s0"], p.config, "/o")
    assert "source" not in rnd and rnd["n"] == 5 and rnd["freeze"]


def test_only_runs_trained_on_a_get_the_source_size():
    p = plan(_config(models=["convnext_micro_cifar"], depths=["2"], source_sizes=[100, 300],
                     treatments=["baseA", "baseB", "AnB", "BnB", "master_keys_fit"], train_args={"max_per_class": 50}))
    sizes = {r.run_id: train_kwargs(r, p.config, "/o")["max_per_class"] for r in p.runs}
    assert sizes == {
        "convnext_micro_cifar-baseA-a100-s0": 100, "convnext_micro_cifar-baseA-a300-s0": 300,
        "convnext_micro_cifar-baseB-s0": 50, "convnext_micro_cifar-depthwise-AnB-a100-n2-s0": 50,
        "convnext_micro_cifar-depthwise-AnB-a300-n2-s0": 50, "convnext_micro_cifar-depthwise-BnB-n2-s0": 50,
        "convnext_micro_cifar-depthwise-master_keys_fit-a100-n2-s0": 50,
        "convnext_micro_cifar-depthwise-master_keys_fit-a300-n2-s0": 50}
    cross = plan(_config(models=["mobilenetv2_cifar"], cross_source="convnext_micro_cifar", depths=["1"],
                         source_sizes=[100], treatments=["baseA", "baseB", "cross"],
                         train_args={"max_per_class": 50}))
    kw = {r.treatment: train_kwargs(r, cross.config, "/o") for r in cross.runs if r.model == "mobilenetv2_cifar"}
    assert kw["cross"]["max_per_class"] == kw["baseB"]["max_per_class"] == 50
    assert kw["cross"]["source"].endswith("convnext_micro_cifar-baseA-a100-s0")


def test_eval_max_per_class_a_reaches_only_runs_on_a():
    def evals(config):
        p = plan(config)
        return {r.treatment: train_kwargs(r, p.config, "/o").get("eval_max_per_class") for r in p.runs}

    base = dict(models=["convnext_micro_cifar"], depths=["2"], treatments=["baseA", "baseB", "AnB"],
                train_args={"eval_max_per_class": 500})
    assert evals(_config(**base, eval_max_per_class_a=200)) == {"baseA": 200, "baseB": 500, "AnB": 500}
    assert evals(_config(**base, eval_max_per_class_a=0)) == {"baseA": None, "baseB": 500, "AnB": 500}  # all
    assert evals(_config(**base)) == {"baseA": 500, "baseB": 500, "AnB": 500}
    # unset, it stays out of the settings a rerun is compared on (sweeps defined before it existed resume)
    assert "eval_max_per_class_a" not in _config(**base).settings()
    assert _config(**base, eval_max_per_class_a=200).settings()["eval_max_per_class_a"] == 200


def test_cross_architecture_plan():
    p = plan(_config(models=["mobilenetv2_cifar"], cross_source="convnext_micro_cifar", depths=["all"],
                     treatments=["baseA", "baseB", "AnB", "cross"]))
    (arm,) = p.arms
    assert (arm.kind, arm.layers, arm.cross_depths) == ("depthwise", 17, (1, 2, 3, 4, 5))
    cross = [r for r in p.runs if r.treatment == "cross"]
    assert [r.n for r in cross] == [1, 2, 3, 4, 5]
    assert {r.source for r in cross} == {"convnext_micro_cifar-baseA-s0"}
    assert "convnext_micro_cifar-baseA-s0" in [r.run_id for r in p.runs]
    assert "convnext_micro_cifar-baseB-s0" not in [r.run_id for r in p.runs]
    kw = train_kwargs(cross[0], p.config, "/o")
    assert (kw["kernel_map"], kw["channel_map"], kw["model"]) == ("auto", "auto", "mobilenetv2_cifar")


def test_paired_kinds_share_bases():
    p = plan(_config(models=["convnext_micro_cifar", "convnext_micro_cifar"], kinds=["depthwise", "pointwise"],
                     depths=["1", "2"]))
    assert [(a.kind, a.layers) for a in p.arms] == [("depthwise", 5), ("pointwise", 10)]
    assert sum(r.treatment.startswith("base") for r in p.runs) == 2


@pytest.mark.parametrize("overrides, message", [
    (dict(treatments=["baseB", "AnB"]), "treatment 'AnB' needs 'baseA' (its source)"),
    (dict(treatments=["baseA", "AnB"]), "treatment 'AnB' needs 'baseB' (the denominator of relative accuracy)"),
    (dict(treatments=["baseA", "BnB+"]), "treatment 'BnB+' needs 'baseB' (its source)"),
    (dict(depths=["7"]), "depth n=7 is out of range for convnext_micro_cifar (5 depthwise layers): allowed 1..5"),
    (dict(depths=["0"]), "depth n=0 is out of range"),
    (dict(depths=["deep"]), "depth 'deep' is not an integer, 'all', 'last' or 'spread:K' (K >= 2)"),
    (dict(depths=["spread:1"]), "depth 'spread:1' is not an integer"),
    (dict(kinds=["sparse"]), "unknown filter kind 'sparse'"),
    (dict(kinds=["depthwise"]), "model 'resnet10_cifar' has no depthwise layers"),
    (dict(kinds=["conv", "conv", "conv"]), "kinds has 3 entries for 2 models"),
    (dict(treatments=["baseA", "baseB", "AnC"]), "unknown treatment 'AnC'"),
    (dict(models=["resnet11_cifar"]), "unknown model 'resnet11_cifar'"),
    (dict(treatments=["baseA", "baseB", "cross"]), "treatment 'cross' needs cross_source"),
    (dict(cross_source="resnet10_cifar", treatments=["baseA", "baseB", "cross"]), "is also a target model"),
    (dict(train_args={"n": 3}), "train_args sets 'n'"),
    (dict(seeds=[]), "seeds is empty"),
    # B defaults to A's dataset: a Fashion-MNIST split on Animal-MNIST is caught before anything trains
    (dict(dataset_a="animal_mnist", classes_a=None, classes_b=["fashion_garments"]),
     "classes='fashion_garments' is a split of fashion_mnist or tfds:fashion_mnist, not of dataset 'animal_mnist'"),
    (dict(dataset_a="tfds:cifar100", classes_a="fashion_accessories"),
     "classes='fashion_accessories' is a split of fashion_mnist or tfds:fashion_mnist, not of dataset "
     "'tfds:cifar100'"),
    (dict(seeds=[0, 1, 0]), "seeds lists 0 more than once; give each value once"),
    (dict(source_sizes=[100, 300, 100]), "source_sizes lists 100 more than once"),
    (dict(treatments=["baseA", "baseB", "AnB", "AnB"]), "treatments lists 'AnB' more than once"),
    (dict(models=["convnext_micro_cifar", "convnext_micro_cifar"], kinds=["auto", "depthwise"]),
     "model 'convnext_micro_cifar' is listed more than once with kind 'depthwise'"),
    (dict(treatments=["baseA", "baseB", "master_keys_fit"], train_args={"freeze_following_norm": True}),
     "train_args freeze_following_norm=True does not apply to treatment 'master_keys_fit'"),
    # a Dense pointwise kernel (ConvNeXt) cannot be mapped onto a 1x1 Conv2D one (MobileNetV2)
    (dict(models=["mobilenetv2_cifar"], kinds=["pointwise"], cross_source="convnext_micro_cifar", depths=["1"],
          treatments=["baseA", "baseB", "cross"]),
     "treatment 'cross' cannot copy 1 pointwise layers of convnext_micro_cifar into mobilenetv2_cifar: "),
    # without a kernel map, 7x7 depthwise kernels do not fit MobileNetV2's 3x3 ones
    (dict(models=["mobilenetv2_cifar"], cross_source="convnext_micro_cifar", cross_kernel_map=None, depths=["2"],
          treatments=["baseA", "baseB", "cross"]),
     "treatment 'cross' cannot copy 2 depthwise layers of convnext_micro_cifar into mobilenetv2_cifar: "),
])
def test_bad_definitions_raise_one_line(overrides, message):
    with pytest.raises(ValueError) as e:
        plan(_config(**overrides))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
