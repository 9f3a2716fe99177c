"""scripts/reproduce.sh (make reproduce) with stand-ins for the binaries: every worker goes through every preset as
its own shard, a failed preset does not stop the others and is named at the end, bad WORKERS is refused."""

import os
import pathlib
import stat
import subprocess

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
    # mk-sweep: records its flags and thread settings; the preset "beta" fails
    _executable(bin_dir / "mk-sweep", f"""#!/usr/bin/env bash
echo "sweep $* threads=$TF_NUM_INTRAOP_THREADS" >> {calls}
case "$1" in *beta*) exit 1;; esac
""")
    return bin_dir, calls


def _run(bin_dir, tmp_path, workers):
    env = {**os.environ, "BIN": str(bin_dir), "WORKERS": workers, "LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_every_worker_runs_every_preset_and_failures_are_named(fake_bin, tmp_path):
    bin_dir, calls = fake_bin
    result = _run(bin_dir, tmp_path, "2")
    assert result.returncode == 1
    assert result.stderr.strip() == "make reproduce: beta did not finish every run; rerun to resume them"
    lines = calls.read_text().splitlines()
    sweeps = sorted(line for line in lines if line.startswith("sweep"))
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # nproc / WORKERS
    assert sweeps == sorted(
        f"sweep --flagfile=flags/claims/{preset}.flags --num_shards=2 --shard_index={i} threads={threads}"
        for preset in ("alpha", "beta") for i in (0, 1))
    assert lines[-1] == "findings -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["worker0.log", "worker1.log"]


@pytest.mark.parametrize("workers", ["0", "two", "-1"])
def test_bad_workers_is_refused_before_anything_runs(fake_bin, tmp_path, workers):
    bin_dir, calls = fake_bin
    result = _run(bin_dir, tmp_path, workers)
    assert result.returncode == 2
    assert result.stderr.strip() == f"make reproduce: WORKERS={workers}; allowed: a positive integer"
    assert not calls.exists()
