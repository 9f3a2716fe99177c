"""Pairing: at one seed, every run of one model starts from bit-identical weights in each layer its treatment
does not copy, whether or not it loads a source model first; baseA differs from baseB only in the head."""

import keras
import numpy as np
import pytest

from mk_keras import filter_layers
from mk_keras.training import RunSpec, train

pytestmark = pytest.mark.backend_agnostic

MODEL = "convnext_micro_cifar"


def _run(seed=5, **kwargs):
    """Train one step; returns (metrics, {layer: weights after build and transfer})."""
    seen = {}

    def snapshot(model):
        seen.update({layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights] for layer in model.layers
                     if layer.weights})
        # the next draw of the seeded stream: training randomness (dropout, drop path) starts there
        seen["next_random_draw"] = [keras.ops.convert_to_numpy(keras.random.uniform((4,)))]
        return {}

    args = dict(model=MODEL, dataset="digits", max_per_class=8, eval_max_per_class=2, batch_size=8, epochs=1,
                steps_per_epoch=1, eval_every=0, steps_per_execution=1, verbose=0, seed=seed)
    metrics = train(**{**args, **kwargs}, init_hook=snapshot)
    return metrics, seen


@pytest.mark.long  # make test-long
def test_every_treatment_starts_from_the_same_weights(source_path):
    arms = {
        "baseB": {},
        "AnB": {"source": source_path, "n": 2},
        "BnB": {"source": source_path, "n": 3},
        "AnB+": {"source": source_path, "n": 2, "freeze": False},
        "random_frozen": {"n": 2},
        "reversed": {"source": source_path, "n": 2, "order": "last"},
    }
    runs = {name: _run(**kwargs) for name, kwargs in arms.items()}
    base_hashes = runs["baseB"][0]["initial_weights"]
    assert len(base_hashes) > 10
    for name, (metrics, _) in runs.items():
        assert metrics["initial_weights"] == base_hashes, name
    # After the transfer, every layer the treatment did not copy still holds the shared initial weights.
    base_weights = runs["baseB"][1]
    for name, (metrics, weights) in runs.items():
        np.testing.assert_array_equal(weights["next_random_draw"][0], base_weights["next_random_draw"][0], name)
        copied = set(metrics["transfer"]["layers"]) if metrics["transfer"] and metrics["transfer"]["source"] else set()
        for layer, values in base_weights.items():
            if layer not in copied:
                for a, b in zip(values, weights[layer]):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name}: {layer}")
        if copied:
            source = keras.saving.load_model(source_path)
            by_name = {f.name: keras.ops.convert_to_numpy(f.kernel) for f in filter_layers(source, "depthwise")}
            for layer in copied:
                np.testing.assert_array_equal(weights[layer][0], by_name[layer])


def test_base_a_differs_from_base_b_only_in_the_head():
    base_a, _ = _run(classes=[0, 1, 2, 3, 4, 5])
    base_b, _ = _run(classes=[6, 7, 8, 9])
    a, b = base_a["initial_weights"], base_b["initial_weights"]
    assert a.keys() == b.keys()
    assert [layer for layer in a if a[layer] != b[layer]] == ["head_dense"]


def test_init_seed_and_data_seed_are_separate():
    reference, _ = _run(seed=5)
    same_init, _ = _run(seed=5, data_seed=9)
    other_init, _ = _run(seed=5, init_seed=6)
    assert same_init["initial_weights"] == reference["initial_weights"]
    assert other_init["initial_weights"] != reference["initial_weights"]
    assert same_init["spec"]["data_seed"] == 9 and same_init["spec"]["init_seed"] == 5
    assert reference["spec_hash"] != same_init["spec_hash"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the evaluation set is chosen by NumPy/tf.data, the same under every backend")
def test_the_evaluation_set_does_not_depend_on_the_seeds(monkeypatch):
    from mk_keras import data

    loaded = {}
    real_load = data.load

    def recording_load(spec, split="train", **kwargs):
        result = real_load(spec, split=split, **kwargs)
        loaded.setdefault(split, []).append(np.stack([x.numpy() for x, _ in result.dataset]))
        return result

    monkeypatch.setattr(data, "load", recording_load)
    for seed in (0, 1):
        _run(seed=seed)
    train_a, train_b = loaded["train"]
    eval_a, eval_b = loaded["test"]
    assert not np.array_equal(train_a, train_b)  # the training subset follows the data seed ...
    np.testing.assert_array_equal(eval_a, eval_b)  # ... the evaluation subset does not


def test_a_spec_round_trips_and_its_hash_ignores_execution_settings():
    spec = RunSpec(model=MODEL, dataset="digits", seed=3, image_size=32)
    assert spec.init_seed == spec.data_seed == 3 and spec.image_size == (32, 32)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert spec.replace(steps_per_execution=1, checkpoint_every=7).spec_hash() == spec.spec_hash()
    assert spec.replace(lr=1e-3).spec_hash() != spec.spec_hash()
    with pytest.raises(ValueError, match="unknown run specification fields \\['nope'\\]"):
        RunSpec.from_dict({**spec.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="kernel_map='resize'.*without a source"):
        RunSpec(kernel_map="resize")


def test_a_changed_model_builder_changes_the_run_identity(monkeypatch, tmp_path):
    import json

    from mk_keras.models import model_revision, register_model, registry
    from mk_keras.training import rundir

    spec = RunSpec(model=MODEL, dataset="digits", seed=3)
    assert model_revision(MODEL) == 1 and "model_revision" not in spec.identity()  # earlier runs keep their hash
    before = spec.spec_hash()
    monkeypatch.setitem(registry._MODELS[MODEL], "revision", 2)
    assert spec.identity()["model_revision"] == 2 and spec.spec_hash() != before
    # alexnet_small_cifar changed its initialisation: revision 2
    assert RunSpec(model="alexnet_small_cifar", dataset="digits").identity()["model_revision"] == 2
    # an unfinished run of the model's earlier revision is not resumed with the new builder
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running", "spec": spec.to_dict()}))
    with pytest.raises(ValueError, match=r"other settings \(model_revision: None -> 2\)"):
        rundir.inspect(str(tmp_path), False, spec)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running", "spec": spec.to_dict(),
                                                       "model_revision": 2}))
    assert rundir.inspect(str(tmp_path), False, spec) is None  # same revision: resumable (no checkpoint yet)
    with pytest.raises(ValueError, match=r"revision=0 for model 'x'; allowed: an integer >= 1"):
        register_model("x", "resnet", revision=0)(lambda **kw: None)
