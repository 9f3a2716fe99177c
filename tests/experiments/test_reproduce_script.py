"""scripts/reproduce.sh (make reproduce) with stand-ins for the binaries: every worker goes through every preset as
its own shard, a failed preset does not stop the others and is named at the end, Ctrl-C stops every worker, bad
WORKERS is refused."""

import os
import pathlib
import signal
import stat
import subprocess
import time

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "reproduce.sh"


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    # python: lists two presets, records the findings call
    _executable(bin_dir / "python", f"""#!/usr/bin/env bash
if [ "$3" = --list_presets ]; then echo alpha; echo beta; else echo "findings $*" >> {calls}; fi
""")
    # mk-sweep: records its flags and thread settings; the first preset, "alpha", fails; with SLEEP set it
    # records its pid and sleeps
    _executable(bin_dir / "mk-sweep", f"""#!/usr/bin/env bash
echo "sweep $* threads=$TF_NUM_INTRAOP_THREADS" >> {calls}
if [ -n "$SLEEP" ]; then echo $$ >> {tmp_path}/pids.txt; sleep "$SLEEP"; fi
case "$1" in *alpha*) exit 1;; esac
""")
    return bin_dir, calls


def _env(bin_dir, tmp_path, workers, **extra):
    return {**os.environ, "BIN": str(bin_dir), "WORKERS": workers, "LOG_DIR": str(tmp_path / "logs"), **extra}


def _run(bin_dir, tmp_path, workers):
    return subprocess.run(["bash", str(SCRIPT)], env=_env(bin_dir, tmp_path, workers), capture_output=True,
                          text=True, timeout=60)


def test_every_worker_runs_every_preset_and_failures_are_named(fake_bin, tmp_path):
    bin_dir, calls = fake_bin
    result = _run(bin_dir, tmp_path, "2")
    assert result.returncode == 1
    assert result.stderr.strip() == "make reproduce: not every run finished: alpha; rerun to resume them"
    lines = calls.read_text().splitlines()
    sweeps = sorted(line for line in lines if line.startswith("sweep"))
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # nproc / WORKERS
    assert sweeps == sorted(
        f"sweep --flagfile=flags/claims/{preset}.flags --num_shards=2 --shard_index={i} threads={threads}"
        for preset in ("alpha", "beta") for i in (0, 1))
    assert lines[-1] == "findings -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["worker0.log", "worker1.log"]


def test_one_worker_runs_in_the_foreground_with_every_thread(fake_bin, tmp_path):
    bin_dir, calls = fake_bin
    result = _run(bin_dir, tmp_path, "1")
    assert result.returncode == 1
    threads = len(os.sched_getaffinity(0))
    assert [line for line in calls.read_text().splitlines() if line.startswith("sweep")] == [
        f"sweep --flagfile=flags/claims/{preset}.flags --num_shards=1 --shard_index=0 threads={threads}"
        for preset in ("alpha", "beta")]


def test_interrupt_stops_every_worker_and_its_sweep(fake_bin, tmp_path):
    bin_dir, calls = fake_bin
    # SIGINT at its default disposition, as under a terminal: a test runner's worker (pytest-xdist) may ignore
    # it, and bash cannot trap a signal that was ignored when it started
    script = subprocess.Popen(["bash", str(SCRIPT)], env=_env(bin_dir, tmp_path, "2", SLEEP="60"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids_file = tmp_path / "pids.txt"
    deadline = time.monotonic() + 30
    while not (pids_file.exists() and len(pids_file.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the two stand-in sweeps did not start"
        time.sleep(0.1)
    script.send_signal(signal.SIGINT)
    assert script.wait(timeout=30) == 130
    for pid in map(int, pids_file.read_text().split()):
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"sweep {pid} still runs after the interrupt"
            time.sleep(0.1)
    assert "findings" not in calls.read_text()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("workers", ["0", "two", "-1"])
def test_bad_workers_is_refused_before_anything_runs(fake_bin, tmp_path, workers):
    bin_dir, calls = fake_bin
    result = _run(bin_dir, tmp_path, workers)
    assert result.returncode == 2
    assert result.stderr.strip() == f"make reproduce: WORKERS={workers}; allowed: a positive integer"
    assert not calls.exists()
