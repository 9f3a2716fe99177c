"""Workers claim ready runs: none waits while a run is ready, a transfer starts once its base is finished."""

import os
import threading
import time

import pytest
from sweep_helpers import FakeTrain

from mk_keras.experiments import SweepConfig, run_sweep

CONFIG = dict(name="c", classes_a="fashion_garments", classes_b="fashion_accessories", models=["resnet10_cifar"],
              depths=["1", "3", "5"], seeds=[0], treatments=["baseA", "baseB", "AnB", "BnB"],
              train_args={"epochs": 1})
SLEEP_S = {"resnet10_cifar-baseA-s0": 2.0, "resnet10_cifar-baseB-s0": 0.1}  # others: 0.1 s
# delay allowed between a run becoming ready and a free worker starting it: the result file is fsynced, and the
# machine may be loaded; waiting for baseA instead of training the ready BnB runs idles a worker for ~1.5 s
SLACK_S = 0.5


class TimedTrain(FakeTrain):
    """FakeTrain that sleeps per run and records (run, worker thread, start, end)."""

    def __init__(self):
        super().__init__()
        self.spans = []

    def __call__(self, **kw):
        name, start = os.path.basename(kw["run_dir"]), time.monotonic()
        time.sleep(SLEEP_S.get(name, 0.1))
        metrics = super().__call__(**kw)
        self.spans.append((name, threading.current_thread().name, start, time.monotonic()))
        return metrics


def test_two_workers_never_wait_while_a_run_is_ready(tmp_path):
    fake = TimedTrain()
    # the old static dealing gave worker 1 (odd plan indices) baseB, then an AnB run waiting 2 s for baseA
    workers = [threading.Thread(target=run_sweep, name=f"w{i}", args=(SweepConfig(**CONFIG), str(tmp_path)),
                                kwargs=dict(shard_index=i, num_shards=2, train_fn=fake, log=lambda line: None,
                                            poll_s=0.05)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    spans = {name: (worker, start, end) for name, worker, start, end in fake.spans}
    assert len(fake.spans) == len(spans) == 2 + 6  # every run trained once
    base_a, base_b = spans["resnet10_cifar-baseA-s0"], spans["resnet10_cifar-baseB-s0"]
    assert base_a[0] != base_b[0] and abs(base_a[1] - base_b[1]) < SLACK_S  # the bases train side by side
    bnb = [v for k, v in spans.items() if "-BnB-" in k]
    anb = [v for k, v in spans.items() if "-AnB-" in k]
    # while baseA trains, the other worker trains every BnB run (ready once baseB is finished) ...
    assert all(worker == base_b[0] and start >= base_b[2] and end <= base_a[2] for worker, start, end in bnb)
    # ... and the AnB runs start when baseA is finished, on both workers
    assert all(start >= base_a[2] for _, start, _ in anb)
    assert {worker for worker, _, _ in anb} == {"w0", "w1"}
    assert min(start for _, start, _ in anb) - base_a[2] < SLACK_S
    # no worker is idle while a run is ready (from its source's end, or the start for bases, to its own start)
    first = min(start for _, start, _ in spans.values())
    ready = {k: (spans[f"resnet10_cifar-{'baseA' if '-AnB-' in k else 'baseB'}-s0"][2] if "-n" in k else first,
                 start) for k, (_, start, _) in spans.items()}
    for worker in ("w0", "w1"):
        mine = sorted((start, end) for w, start, end in spans.values() if w == worker)
        for (_, idle_from), (idle_to, _) in zip(mine, mine[1:]):
            waiting = [k for k, (a, b) in ready.items() if max(a, idle_from) + SLACK_S < min(b, idle_to)]
            assert not waiting, (worker, idle_from, idle_to, waiting)


class FlakyTrain(FakeTrain):
    """Writes a checkpoint marker into the run directory, then raises OSError on the first `failures` calls of
    `flaky`; later calls find the marker (a resume)."""

    def __init__(self, flaky, failures):
        super().__init__()
        self.flaky, self.failures, self.found_marker = flaky, failures, []

    def __call__(self, **kw):
        run_dir = kw["run_dir"]
        marker = os.path.join(run_dir, "checkpoint", "state.npz")
        if os.path.basename(run_dir) == self.flaky:
            self.found_marker.append(os.path.exists(marker))
            if self.failures:
                self.failures -= 1
                self.calls.append(kw)
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                with open(marker, "w") as f:
                    f.write("step 40")
                self._write(run_dir, {"status": "failed", "error": "disk I/O error"})
                raise OSError("disk I/O error")
        return super().__call__(**kw)


def _one_worker(out, fake, **kwargs):
    return run_sweep(SweepConfig(**CONFIG), str(out), train_fn=fake, log=lambda line: None, poll_s=0.05, **kwargs)


def test_a_transient_failure_resumes_from_its_checkpoint(tmp_path):
    base = "resnet10_cifar-baseA-s0"
    fake = FlakyTrain(base, failures=1)
    rows = {r["run_id"]: r for r in _one_worker(tmp_path, fake)}  # retried by the same worker
    assert fake.run_names()[:2] == [base, base] and fake.found_marker == [False, True]
    assert not any(kw.get("overwrite") for kw in fake.calls)
    assert all(r["status"] == "finished" for r in rows.values()) and len(rows) == 8

    # with retries exhausted, the base and its dependents are left to a rerun, which resumes the base
    fake = FlakyTrain(base, failures=2)
    out = tmp_path / "rerun"
    with pytest.raises(RuntimeError, match=f"first: {base}: OSError: disk I/O error"):
        _one_worker(out, fake, max_retries=1)
    assert fake.run_names().count(base) == 2 and not any("-AnB-" in n for n in fake.run_names())
    assert os.path.exists(out / "runs" / base / "checkpoint" / "state.npz")  # the run directory is kept
    fake = FlakyTrain(base, failures=0)
    rows = {r["run_id"]: r for r in _one_worker(out, fake)}
    assert fake.run_names()[0] == base and fake.found_marker == [True] and not fake.calls[0].get("overwrite")
    assert sorted(fake.run_names()) == sorted([base, *(n for n in rows if "-AnB-" in n)])
    assert all(r["status"] == "finished" for r in rows.values())


def test_bad_arguments_stop_the_sweep_at_once(tmp_path):
    class BadTrain(FakeTrain):
        def __call__(self, **kw):
            self.calls.append(kw)
            raise ValueError("batch_size=64 exceeds the 40 training examples")

    fake = BadTrain()
    with pytest.raises(ValueError, match="exceeds the 40 training examples"):
        _one_worker(tmp_path, fake)
    assert len(fake.calls) == 1 and not os.listdir(tmp_path / "results")
