"""Shared fixtures. Set KERAS_BACKEND before running pytest to pick the backend (default: tensorflow)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torchvision (and timm, which imports it) segfaults when imported after TensorFlow (torch 2.14.1, TF 2.21);
# imported first, both work in one process. The conversion tests use them as reference models.
try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

import gc  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# Objects alive now (torch, Keras and its backend's modules) live as long as the process: move them out of the
# collector's reach, so the gc.collect() in every test's clear_session does not traverse them again (measured:
# teardown 0.75 s -> 0.05 s per test in tests/test_filters.py, 2-core machine, 2026-11-30).
gc.freeze()


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def run_local_workers():
    """`run(argv, timeout_s, env=None)`: start `argv` in two local processes that form one TF_CONFIG cluster
    (MultiWorkerMirroredStrategy, worker 0 the chief) on free ports, wait for both (killing any left at a timeout)
    and return [(returncode, combined stdout/stderr)] per worker."""
    import json
    import socket
    import subprocess

    def run(argv, timeout_s, env=None):
        socks = [socket.socket() for _ in range(2)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
        for s in socks:
            s.close()
        procs = []
        try:
            for index in range(2):
                tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
                procs.append(subprocess.Popen(
                    argv, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {}), "TF_CONFIG": tf_config},
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            outputs = [p.communicate(timeout=timeout_s)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return [(p.returncode, out) for p, out in zip(procs, outputs)]

    return run
