"""Runs trained through the model cache (`train(reuse=True)`) are bit-identical to the same runs trained fresh."""

import collections

import keras
import numpy as np
import pytest

from mk_keras.training import reuse, train

MODEL = "convnext_micro_cifar"
ARGS = dict(model=MODEL, dataset="digits", max_per_class=8, eval_max_per_class=2, batch_size=8, epochs=2,
            steps_per_epoch=2, steps_per_execution=2, eval_every=0, drop_path_rate=0.2, deterministic=True,
            verbose=0)


class _Final(keras.callbacks.Callback):
    """Every variable of the trained model at the end of training, and the model itself."""

    def on_train_end(self, logs=None):
        self.values = {v.path: keras.ops.convert_to_numpy(v).copy() for v in self.model.variables}
        self.net = self.model


def _train(reuse_, **kwargs):
    final = _Final()
    metrics = train(**ARGS, **kwargs, reuse=reuse_, callbacks=[final])
    return metrics, final


def _same(a, b):
    (ma, fa), (mb, fb) = a, b
    for key in ("top1", "top5", "loss", "initial_weights", "frozen_layers", "params", "transfer", "spec_hash"):
        assert ma[key] == mb[key], key
    untimed = [[{k: v for k, v in e.items() if k != "wall_time_s"} for e in m["epochs"]] for m in (ma, mb)]
    assert untimed[0] == untimed[1]
    assert fa.values.keys() == fb.values.keys()
    for path, value in fa.values.items():
        np.testing.assert_array_equal(value, fb.values[path], err_msg=path)


@pytest.fixture
def cache(monkeypatch):
    fresh = reuse.ModelCache()
    monkeypatch.setattr(reuse, "CACHE", fresh)
    monkeypatch.setattr(reuse, "SOURCES", reuse.SourceCache())
    return fresh


def test_cache_hit_is_bit_identical_to_a_fresh_run(cache, source_path, tmp_path):
    _train(True, source=source_path, n=2, seed=0)  # AnB n=2: a miss that fills the caches (and trains its model)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    assert (reuse.SOURCES.hits, reuse.SOURCES.misses) == (0, 1)
    # AnB n=2 at another seed: the same frozen layers, so the same traced functions, and the same source
    hit = _train(True, source=source_path, n=2, seed=1, run_dir=tmp_path / "hit")
    assert (cache.hits, cache.misses) == (1, 1) and (reuse.SOURCES.hits, reuse.SOURCES.misses) == (1, 1)
    fresh = _train(False, source=source_path, n=2, seed=1)  # loads its source from the file
    assert (cache.hits, cache.misses) == (1, 1) and (reuse.SOURCES.hits, reuse.SOURCES.misses) == (1, 1)
    assert hit[1].net is not fresh[1].net
    _same(hit, fresh)
    # the timing record says which runs went through the cache; the steady steps fit inside `fit`, and every
    # part before, in and after it took time
    assert (hit[0]["timing"]["model_cache"], fresh[0]["timing"]["model_cache"]) == ("hit", "off")
    for timing in (hit[0]["timing"], fresh[0]["timing"]):
        assert timing["steps"] == 4 and timing["steady_step_s"] > 0
        assert 4 * timing["steady_step_s"] <= timing["fit_s"] < timing["total_s"]
        assert min(timing["setup_s"], timing["after_fit_s"], timing["fixed_s"]) > 0
    # the frozen kernels are still the source's, bit for bit
    source = keras.saving.load_model(source_path)
    assert len(hit[0]["frozen_layers"]) == 2
    for layer in hit[0]["frozen_layers"]:
        np.testing.assert_array_equal(hit[1].values[f"{layer}/kernel"],
                                      keras.ops.convert_to_numpy(source.get_layer(layer).kernel), layer)
    # the cached model has the fresh model's architecture, and its saved file holds this run's weights
    assert hit[1].net.get_config() == fresh[1].net.get_config()
    saved = keras.saving.load_model(tmp_path / "hit" / "model.keras")
    assert [w.path for w in saved.weights] == [w.path for w in fresh[1].net.weights]
    for w in saved.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), fresh[1].values[w.path], err_msg=w.path)
    assert not any(w.trainable for name in hit[0]["frozen_layers"] for w in saved.get_layer(name).weights)


def test_the_cache_drops_least_recently_used_models_beyond_its_byte_budget():
    def compiled(units):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, name="dense")], name="net")
        model.compile(optimizer="adam", loss="mse")
        model.optimizer.build(model.trainable_variables)
        return model

    sizes = {units: reuse._nbytes(m.variables) + 2 * reuse._nbytes(m.optimizer.variables)
             for units, m in ((u, compiled(u)) for u in (8, 16, 32))}
    assert sizes[8] == 4 * 5 * 8 + 2 * (4 * 2 * 5 * 8 + 8 + 4)  # weights; twice Adam moments, int64 step, lr
    cache = reuse.ModelCache(max_entries=16, max_bytes=sizes[8] + sizes[16])
    cache.put("a", compiled(8))
    cache.put("b", compiled(16))
    assert cache.adopt("a", compiled(8)) is not None  # "a" is now the most recently used
    cache.put("c", compiled(32))  # over budget: "b" goes first, then "a"
    assert (cache.adopt("b", compiled(16)), cache.adopt("a", compiled(8))) == (None, None)
    assert len(cache) == 1 and cache.nbytes() == sizes[32]  # the newest stays even over the budget
    small = reuse.ModelCache(max_entries=2)
    for key in "xyz":
        small.put(key, compiled(8))
    assert len(small) == 2 and small.adopt("x", compiled(8)) is None


@pytest.mark.long  # make test-long
def test_a_sweep_sequence_through_the_cache_matches_fresh_runs(cache, source_path):
    sequence = [
        dict(seed=0),  # baseB: miss
        dict(source=source_path, n=2, seed=0),  # AnB n=2: miss
        dict(n=2, seed=1),  # random_frozen n=2: hit
        dict(source=source_path, n=2, seed=1, kernel_transform="shuffle"),  # shuffled n=2: hit
        dict(n=3, seed=0),  # another frozen set: miss
        dict(seed=1),  # baseB again: hit, after a model of another key trained
    ]
    pattern = []
    for kwargs in sequence:
        hits = cache.hits
        through_cache = _train(True, **kwargs)
        pattern.append(cache.hits > hits)
        _same(through_cache, _train(False, **kwargs))
    assert pattern == [False, False, True, True, False, True]


def test_the_source_cache_loads_a_file_once_per_content():
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]), {"label": name}
        return load

    sources = reuse.SourceCache(max_entries=2)
    first, info = sources.load("a.keras", "h1", loader("a"))
    again, info_again = sources.load("a.keras", "h1", loader("a"))
    assert again is first and loads == ["a"] and info_again == info == {"label": "a"}
    info_again["label"] = "changed"  # each caller gets its own info dict
    assert sources.load("a.keras", "h1", loader("a"))[1] == {"label": "a"}
    assert sources.load("a.keras", "h2", loader("a2"))[0] is not first  # the file changed: loaded again
    sources.load("b.keras", None, loader("b"))  # unknown content: loaded, never kept
    sources.load("b.keras", None, loader("b"))
    assert loads == ["a", "a2", "b", "b"] and len(sources) == 2
    sources.load("c.keras", "h3", loader("c"))  # beyond 2 entries: the least recently used ("a", h1) goes
    sources.load("a.keras", "h1", loader("a"))
    assert loads[-2:] == ["c", "a"] and (sources.hits, sources.misses) == (2, 6)


def test_inside_a_frozen_heap_each_run_collects_its_garbage_and_freezes_the_survivors():
    import gc
    import weakref

    class Cycle:
        def __init__(self):
            self.me = self

    gc.unfreeze()  # start unfrozen (conftest.py freezes the test process's imports)
    try:
        with reuse.frozen_heap():
            garbage, kept = Cycle(), Cycle()
            dead = weakref.ref(garbage)
            del garbage
            reuse.clear_session(keep_traced=True)  # a run's start: the last run's cyclic garbage is collected
            assert dead() is None and gc.get_freeze_count() > 0
            later = weakref.ref(kept)
            del kept  # frozen, then garbage: kept until something is dropped from a cache
            reuse.clear_session(keep_traced=True)
            assert later() is not None
            reuse._drop_oldest(collections.OrderedDict(a=1))  # a cache drops a model: everything is unfrozen
            assert gc.get_freeze_count() == 0
            reuse.clear_session(keep_traced=True)
            assert later() is None
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() == 0  # unfrozen on entry: leaving the block unfreezes
        gc.freeze()
        with reuse.frozen_heap():
            reuse.SourceCache().clear()  # a cache cleared inside the block unfreezes too
            assert gc.get_freeze_count() == 0
        assert gc.get_freeze_count() > 0  # frozen on entry: frozen again on leaving
        reuse._drop_oldest(collections.OrderedDict(a=1))  # outside the block, a cache leaves frozen objects alone
        assert gc.get_freeze_count() > 0
    finally:
        gc.collect()
        gc.freeze()
