"""Sweep execution with a stand-in for `train`: outputs, resume after a kill, shards, locks, failures."""

import json
import os
import subprocess
import sys
import threading
import time

import keras
import pytest
from sweep_helpers import FakeTrain, Killed

from mk_keras.experiments import SweepConfig, merge, run_sweep
from mk_keras.experiments import locks

CONFIG = dict(name="t", classes_a="fashion_garments", classes_b="fashion_accessories",
              models=["convnext_micro_cifar", "resnet10_cifar"], depths=["1", "3", "5"], seeds=[0, 1],
              treatments=["baseA", "baseB", "AnB", "BnB", "reversed"], train_args={"epochs": 1})
PLANNED = 2 * (4 + 2 * 3 * 3)


def _sweep(out, fake, **kwargs):
    return run_sweep(SweepConfig(**CONFIG), str(out), train_fn=fake, log=lambda line: None, poll_s=0.05, **kwargs)


def _read(path):
    with open(path) as f:
        return f.read()


def test_sweep_writes_rows_tables_report_and_figures(tmp_path):
    fake = FakeTrain()
    rows = _sweep(tmp_path, fake)
    assert len(rows) == len(fake.calls) == PLANNED
    assert all(r["status"] == "finished" for r in rows)
    for name in ("results.csv", "results.jsonl", "report.md", "sweep.json", "figures/relative_accuracy.png",
                 "figures/reversed.png", "figures/retention.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert len(_read(tmp_path / "results.csv").splitlines()) == PLANNED + 1
    report = _read(tmp_path / "report.md")
    assert "![Relative accuracy vs n](figures/relative_accuracy.png)" in report
    assert f"{PLANNED} of {PLANNED} planned runs have results" in report
    rows_by_id = {r["run_id"]: r for r in rows}
    anb = rows_by_id["resnet10_cifar-conv-AnB-n3-s1"]
    assert anb["relative_accuracy"] == pytest.approx(anb["top1"] / rows_by_id["resnet10_cifar-baseB-s1"]["top1"])
    assert (anb["frozen_params"], anb["trainable_params"], anb["epochs"]) == (30, 70, 1)
    assert anb["dataset"] == "fashion_mnist[fashion_accessories]" and anb["source"] == "resnet10_cifar-baseA-s1"
    rel = {(r["model"], r["treatment"], r["n"], r["seed"]): r["relative_accuracy"] for r in rows}
    gap = sum(rel["resnet10_cifar", "AnB", 5, s] - rel["resnet10_cifar", "BnB", 5, s] for s in (0, 1)) / 2
    assert f"resnet10_cifar (conv) n=5: {gap:+.3f}" in report
    assert "at the deepest n=5" in report and "50 of 100 weights frozen (50.0%)" in report
    # a second invocation trains nothing and rewrites the same tables
    again = FakeTrain()
    assert _sweep(tmp_path, again) == rows and again.calls == []


def test_resume_after_kill_has_no_lost_or_duplicated_row(tmp_path):
    reference = _sweep(tmp_path / "ref", FakeTrain())
    killed = FakeTrain(kill_at=7)
    with pytest.raises(Killed):
        _sweep(tmp_path / "k", killed)
    done_before = set(killed.run_names()[:6])
    interrupted = killed.run_names()[6]
    resumed = FakeTrain()
    rows = _sweep(tmp_path / "k", resumed)
    assert not done_before & set(resumed.run_names())  # finished runs are skipped
    assert resumed.run_names()[0] == interrupted  # the interrupted run is trained again first
    assert len(resumed.calls) == PLANNED - 6
    assert rows == reference
    assert _read(tmp_path / "k" / "results.csv") == _read(tmp_path / "ref" / "results.csv")
    assert not os.listdir(tmp_path / "k" / "locks")


def test_sharded_sweep_merges_to_the_unsharded_one(tmp_path):
    _sweep(tmp_path / "one", FakeTrain())
    fakes = [FakeTrain() for _ in range(3)]
    for i in (2, 0, 1):  # shards in any order; each trains the bases it needs that are missing
        _sweep(tmp_path / "sharded", fakes[i], shard_index=i, num_shards=3)
    trained = [n for f in fakes for n in f.run_names()]
    assert sorted(trained) == sorted(set(trained)) and len(trained) == PLANNED
    merge(str(tmp_path / "sharded"))
    for name in ("results.csv", "results.jsonl"):
        assert _read(tmp_path / "sharded" / name) == _read(tmp_path / "one" / name)


def test_concurrent_shards_train_each_run_once(tmp_path):
    fakes = [FakeTrain(sleep_s=0.02) for _ in range(2)]
    threads = [threading.Thread(target=_sweep, args=(tmp_path, f), kwargs=dict(shard_index=i, num_shards=2))
               for i, f in enumerate(fakes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trained = [n for f in fakes for n in f.run_names()]
    assert len(trained) == len(set(trained)) == PLANNED
    assert len(_read(tmp_path / "results.csv").splitlines()) == PLANNED + 1


def test_failed_base_fails_its_dependents_and_the_sweep_goes_on(tmp_path):
    fake = FakeTrain(fail={"resnet10_cifar-baseA-s0"})
    rows = {r["run_id"]: r for r in _sweep(tmp_path, fake)}
    assert len(rows) == PLANNED
    assert rows["resnet10_cifar-baseA-s0"]["status"] == "failed"
    assert "NaN" in rows["resnet10_cifar-baseA-s0"]["error"]
    dependent = rows["resnet10_cifar-conv-AnB-n5-s0"]
    assert dependent["status"] == "failed" and "source run resnet10_cifar-baseA-s0 failed" in dependent["error"]
    assert rows["resnet10_cifar-conv-BnB-n5-s0"]["status"] == "finished"
    assert "Failed:** resnet10_cifar-baseA-s0" in _read(tmp_path / "report.md")
    rerun = FakeTrain()
    _sweep(tmp_path, rerun)
    assert rerun.calls == []  # a recorded failure is a result: not retried


def _rerun(out, fake=None, **overrides):
    return run_sweep(SweepConfig(**{**CONFIG, **overrides}), str(out), train_fn=fake or FakeTrain(),
                     log=lambda line: None, poll_s=0.05)


def _definition(out):
    with open(os.path.join(out, "sweep.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("overrides, message", [
    ({"train_args": {"epochs": 2}}, "train_args.epochs: 1 -> 2"),
    ({"name": "u"}, "name: 't' -> 'u'"),
    ({"classes_b": "fashion_garments"}, "classes_b: 'fashion_accessories' -> 'fashion_garments'"),
])
def test_other_settings_in_the_same_directory_are_refused(tmp_path, overrides, message):
    _sweep(tmp_path, FakeTrain())
    before = _definition(tmp_path)
    fake = FakeTrain()
    with pytest.raises(ValueError) as e:
        _rerun(tmp_path, fake, **overrides)
    assert f"{str(tmp_path)!r} holds a sweep with other settings ({message}); use another output directory" == str(
        e.value)
    assert fake.calls == [] and _definition(tmp_path) == before


def test_another_backend_is_refused_and_recorded(tmp_path):
    _sweep(tmp_path, FakeTrain())
    definition = _definition(tmp_path)
    assert definition["backend"] == keras.backend.backend()
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    with open(tmp_path / "sweep.json", "w") as f:
        json.dump({**definition, "backend": other}, f)
    with pytest.raises(ValueError, match=f"other settings \\(backend: '{other}' -> '{keras.backend.backend()}'\\)"):
        _rerun(tmp_path)
    # a sweep.json without a backend (older versions): the one its trained runs recorded
    del definition["backend"]
    with open(tmp_path / "sweep.json", "w") as f:
        json.dump(definition, f)
    metrics_path = tmp_path / "runs" / "resnet10_cifar-baseB-s1" / "metrics.json"
    with open(metrics_path) as f:
        metrics = json.load(f)
    with open(metrics_path, "w") as f:
        json.dump({**metrics, "backend": other}, f)
    with pytest.raises(ValueError, match=f"backend: '{other}' -> "):
        _rerun(tmp_path)
    with open(metrics_path, "w") as f:
        json.dump(metrics, f)
    _rerun(tmp_path)
    assert _definition(tmp_path)["backend"] == keras.backend.backend()


def test_reruns_add_runs_and_results_are_the_union(tmp_path):
    rows = _sweep(tmp_path, FakeTrain())
    fake = FakeTrain()
    more = _rerun(tmp_path, fake, seeds=[2], depths=["2"])  # only seed 2, another depth
    assert len(fake.calls) == 4 + 2 * 3  # bases + 2 arms x 3 treatments at depth 2
    assert more[:len(rows)] == rows and len(more) == len(rows) + len(fake.calls)
    definition = _definition(tmp_path)
    assert len(definition["runs"]) == len(more) == len(_read(tmp_path / "results.csv").splitlines()) - 1
    config = definition["config"]
    assert (config["seeds"], config["depths"]) == ([0, 1, 2], ["1", "3", "5", "2"])
    assert [(a["model"], a["kind"], a["depths"]) for a in definition["arms"]] == [
        ("convnext_micro_cifar", "depthwise", [1, 2, 3, 5]), ("resnet10_cifar", "conv", [1, 2, 3, 5])]
    # dropping treatments from the flags trains nothing and keeps their results
    fake = FakeTrain()
    assert _rerun(tmp_path, fake, treatments=["baseA", "baseB", "AnB"]) == more and fake.calls == []
    assert len(_definition(tmp_path)["runs"]) == len(more)
    assert _definition(tmp_path)["config"]["treatments"] == CONFIG["treatments"]
    # a new treatment trains its runs only
    fake = FakeTrain()
    _rerun(tmp_path, fake, seeds=[0], treatments=["baseA", "baseB", "random_frozen"])
    assert sorted(fake.run_names()) == sorted(f"{m}-random_frozen-n{n}-s0" for m in ("convnext_micro_cifar-depthwise",
                                                                                    "resnet10_cifar-conv")
                                              for n in (1, 3, 5))
    assert "random_frozen" in _read(tmp_path / "report.md")


def test_cross_can_be_added_and_dropped_but_its_source_not_changed(tmp_path):
    base = dict(models=["convnext_micro_cifar"], depths=["1"], seeds=[0], treatments=["baseA", "baseB", "AnB"])
    first = _rerun(tmp_path, **base)
    fake = FakeTrain()
    cross = dict(base, treatments=["baseA", "baseB", "cross"], cross_source="mobilenetv2_cifar")
    rows = _rerun(tmp_path, fake, **cross)
    assert fake.run_names() == ["mobilenetv2_cifar-baseA-s0", "convnext_micro_cifar-depthwise-cross-n1-s0"]
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in first] + fake.run_names()
    config = _definition(tmp_path)["config"]
    assert (config["treatments"], config["cross_source"]) == (["baseA", "baseB", "AnB", "cross"], "mobilenetv2_cifar")
    fake = FakeTrain()
    assert _rerun(tmp_path, fake, **base) == rows and fake.calls == []  # cross dropped from the flags
    assert _definition(tmp_path)["config"]["cross_source"] == "mobilenetv2_cifar"
    refused = [(dict(cross_source="convnext_atto_cifar"), "cross_source: 'mobilenetv2_cifar' -> 'convnext_atto_cifar'"),
               (dict(cross_kernel_map="resize"), "cross_kernel_map: 'auto' -> 'resize'")]
    for changed, message in refused:
        with pytest.raises(ValueError, match=message):
            _rerun(tmp_path, **{**cross, **changed})


def test_source_sizes_cap_a_only(tmp_path):
    fake = FakeTrain()
    rows = _rerun(tmp_path, fake, models=["convnext_micro_cifar"], depths=["5"], seeds=[0], source_sizes=[20, 80],
                  treatments=["baseA", "baseB", "AnB", "BnB"], train_args={"epochs": 1, "max_per_class": 40})
    sizes = {os.path.basename(kw["run_dir"]): kw["max_per_class"] for kw in fake.calls}
    assert sizes == {"convnext_micro_cifar-baseA-a20-s0": 20, "convnext_micro_cifar-baseA-a80-s0": 80,
                     "convnext_micro_cifar-baseB-s0": 40, "convnext_micro_cifar-depthwise-AnB-a20-n5-s0": 40,
                     "convnext_micro_cifar-depthwise-AnB-a80-n5-s0": 40, "convnext_micro_cifar-depthwise-BnB-n5-s0": 40}
    assert {r["source_size"] for r in rows if r["treatment"] == "AnB"} == {20, 80}


def test_a_crashed_run_is_retried_a_nan_run_is_not(tmp_path):
    crashed = "resnet10_cifar-conv-AnB-n3-s0"
    first = FakeTrain(crash={crashed}, fail={"resnet10_cifar-conv-AnB-n1-s0"})
    with pytest.raises(RuntimeError, match=f"1 runs failed 2 times with errors .*first: {crashed}: RuntimeError: out "
                                           "of memory.*rerun the sweep to resume them"):
        _sweep(tmp_path, first, max_retries=1)
    assert first.run_names().count(crashed) == 2 and len(first.calls) == PLANNED + 1  # the others were trained
    retry = FakeTrain()
    rows = {r["run_id"]: r for r in _sweep(tmp_path, retry)}
    assert retry.run_names() == [crashed] and not retry.calls[0].get("overwrite")  # resumed, not started over
    assert rows[crashed]["status"] == "finished" and len(rows) == PLANNED
    assert rows["resnet10_cifar-conv-AnB-n1-s0"]["status"] == "failed"  # recorded NaN: kept
    # a metrics.json cut off by a crash (no result written): trained again from scratch
    os.remove(tmp_path / "results" / f"{crashed}.json")
    with open(tmp_path / "runs" / crashed / "metrics.json", "w") as f:
        f.write('{"status": "runn')
    again = FakeTrain()
    rows = {r["run_id"]: r for r in _sweep(tmp_path, again)}
    assert again.run_names() == [crashed] and again.calls[0]["overwrite"] is True
    assert rows[crashed]["status"] == "finished"


def test_stale_locks_are_broken_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = str(tmp_path / "a.lock")
    with open(path, "w") as f:
        f.write(f"{locks.HOST} {int(dead.stdout)} x")
    assert locks.break_if_stale(path, stale_after_s=1e9) and not os.path.exists(path)
    with open(path, "w") as f:
        f.write("other-machine 1 x")
    assert not locks.break_if_stale(path, stale_after_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))
    assert locks.break_if_stale(path, stale_after_s=60) and not os.path.exists(path)
    live = locks.Lock(path, heartbeat_s=0.05)
    assert live.acquire() and not locks.Lock(path).acquire()
    os.utime(path, (old, old))
    time.sleep(0.2)  # the heartbeat refreshes it
    assert not locks.break_if_stale(path, stale_after_s=60)
    live.release()
    assert not os.path.exists(path)
