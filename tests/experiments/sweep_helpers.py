"""A stand-in for `mk_keras.training.train` for sweep-logic tests (planning, resume, shards, merge)."""

import json
import os
import threading
import time
import zlib

from mk_keras.training import TrainingFailed


class Killed(BaseException):
    """Simulates the process dying mid-run (not an Exception, like a signal)."""


class FakeTrain:
    """Records calls; writes metrics.json like `train`; top-1 is a deterministic function of what the run
    computes (model, data, source, n, order, freeze, seed, size). `kill_at`: the k-th call (1-based) writes
    a 'running' metrics.json and raises `Killed`; `fail`: run-dir names whose call raises TrainingFailed;
    `crash`: run-dir names whose call writes a 'failed' metrics.json and raises RuntimeError (as `train` does
    for an error that is not a NaN loss). Like `train`, a run directory whose metrics.json is not valid JSON
    is refused (ValueError), and a finished one unless `overwrite`."""

    def __init__(self, kill_at=None, fail=(), sleep_s=0.0, crash=()):
        self.calls, self.kill_at, self.fail, self.sleep_s = [], kill_at, set(fail), sleep_s
        self.crash = set(crash)
        self._lock = threading.Lock()

    @staticmethod
    def top1(kw):
        key = "|".join(str(kw.get(k)) for k in ("model", "dataset", "classes", "n", "order", "freeze", "seed",
                                                 "max_per_class", "kernel_map"))
        key += "|" + os.path.basename(str(kw.get("source")))
        if kw.get("master_key_reference"):
            key += "|" + os.path.basename(kw["master_key_reference"])
        return 0.5 + (zlib.crc32(key.encode()) % 500) / 1000

    def __call__(self, **kw):
        with self._lock:
            self.calls.append(kw)
            count = len(self.calls)
        run_dir, name = kw["run_dir"], os.path.basename(kw["run_dir"])
        if os.path.exists(os.path.join(run_dir, "metrics.json")):
            with open(os.path.join(run_dir, "metrics.json")) as f:
                try:
                    prev = json.load(f)
                except json.JSONDecodeError:
                    raise ValueError(f"{run_dir}/metrics.json is not valid JSON") from None
            if prev["status"] == "finished" and not kw.get("overwrite"):
                raise FileExistsError(f"{run_dir} holds a finished run")
        os.makedirs(run_dir, exist_ok=True)
        for key in ("source", "master_key_reference"):
            if kw.get(key) not in (None, "master_keys", "delta"):  # built-in filters, not a run
                assert json.load(open(os.path.join(kw[key], "metrics.json")))["status"] == "finished"
        if name in self.fail:
            self._write(run_dir, {"status": "failed", "error": "loss became NaN"})
            raise TrainingFailed("loss became NaN at step 3")
        if name in self.crash:
            self._write(run_dir, {"status": "failed", "error": "out of memory"})
            raise RuntimeError("out of memory")
        time.sleep(self.sleep_s)
        if count == self.kill_at:
            self._write(run_dir, {"status": "running"})
            raise Killed(name)
        metrics = {"status": "finished", "top1": self.top1(kw), "top5": 1.0, "epochs_completed": 1,
                   "params": {"trainable": 100 - 10 * kw.get("n", 0), "frozen": 10 * kw.get("n", 0)},
                   "wall_time_s": 1.5}
        self._write(run_dir, metrics)
        return metrics

    @staticmethod
    def _write(run_dir, metrics):
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)

    def run_names(self):
        return [os.path.basename(kw["run_dir"]) for kw in self.calls]
