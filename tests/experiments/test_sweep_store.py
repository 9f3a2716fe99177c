"""A run store shared by sweeps: runs of equal specification are trained once, under the store's lock."""

import collections
import os
import threading

import pytest
from sweep_helpers import FakeTrain

from mk_keras.experiments import SweepConfig, run_sweep

SHARED = dict(classes_a="fashion_garments", classes_b="fashion_accessories", models=["resnet10_cifar"],
              depths=["1", "3"], seeds=[0], train_args={"epochs": 1})
FIRST = dict(SHARED, name="first", treatments=["baseA", "baseB", "AnB"])
SECOND = dict(SHARED, name="second", treatments=["baseA", "baseB", "AnB", "BnB"])


def _sweep(out, fake, store, **config):
    return {r["run_id"]: r for r in run_sweep(SweepConfig(**config, store=str(store)), str(out), train_fn=fake,
                                              log=lambda line: None, poll_s=0.05)}


def _trained(fake):
    """(treatment data, n, source run) of each call: what a call computed, whatever its run directory."""
    return [(kw["classes"], kw.get("n"), os.path.basename(str(kw.get("source")))) for kw in fake.calls]


def test_two_sweeps_share_runs_of_equal_specification(tmp_path):
    store, fake = tmp_path / "store", FakeTrain()
    first = _sweep(tmp_path / "a", fake, store, **FIRST)
    assert len(fake.calls) == 4
    second = _sweep(tmp_path / "b", fake, store, **SECOND)
    # only BnB is new: both bases and the AnB runs come from the store
    assert len(fake.calls) == 6 and all(kw["source"].endswith("resnet10_cifar-baseB-s0") for kw in fake.calls[4:])
    for run_id, row in first.items():
        assert {**second[run_id], "experiment": "first"} == row
        a, b = (os.path.realpath(tmp_path / d / "runs" / run_id) for d in "ab")
        assert a == b and os.path.dirname(a) == str(store)
    assert sorted(os.listdir(store))[-1] == "locks" and len(os.listdir(store)) == 6 + 1
    # other training arguments are another specification: trained again
    other = dict(SECOND, train_args={"epochs": 2})
    again = FakeTrain()
    _sweep(tmp_path / "c", again, store, **other)
    assert len(again.calls) == 6


def test_concurrent_sweeps_train_a_shared_base_once(tmp_path):
    store, fake = tmp_path / "store", FakeTrain(sleep_s=0.2)
    threads = [threading.Thread(target=_sweep, args=(tmp_path / config["name"], fake, store), kwargs=config)
               for config in (FIRST, SECOND)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = collections.Counter(_trained(fake))
    assert len(counts) == 6 and set(counts.values()) == {1}  # 2 bases, 2 AnB, 2 BnB: each trained once
    for name, config, planned in (("first", FIRST, 4), ("second", SECOND, 6)):
        rows = run_sweep(SweepConfig(**config, store=str(store)), str(tmp_path / name), train_fn=FakeTrain(),
                         log=lambda line: None)
        assert len(rows) == planned and all(r["status"] == "finished" for r in rows)


def test_a_store_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "store").write_text("")
    with pytest.raises(ValueError, match=r"store='.*store' is a file; give a directory"):
        _sweep(tmp_path / "a", FakeTrain(), tmp_path / "store", **FIRST)
    assert not os.path.exists(tmp_path / "a")
