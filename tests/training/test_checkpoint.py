"""Checkpoints: the background writer (consistent snapshot, one write in flight, errors raised), wall-time and
step triggers of RunMonitor under an injected clock, and the checkpoint_every_s setting."""

import threading

import keras
import numpy as np
import pytest

from mk_keras.cli import train as mk_train
from mk_keras.training import checkpoint
from mk_keras.training.callbacks import RunMonitor, StepTimer
from mk_keras.training.spec import RunSpec


@pytest.fixture
def model():
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile(optimizer="adam", loss="mse", metrics=["mae"])
    net.optimizer.build(net.trainable_variables)
    return net


@pytest.fixture
def writes(monkeypatch):
    """Records the step of every write; `gate` (set by default) holds writes back while cleared."""
    record = {"steps": [], "gate": threading.Event(), "fail": None}
    record["gate"].set()
    real = checkpoint.write_arrays

    def write(directory, arrays):
        assert record["gate"].wait(30)
        if record["fail"]:
            raise record["fail"]
        real(directory, arrays)
        record["steps"].append(checkpoint.read_meta(directory)["step"])

    monkeypatch.setattr(checkpoint, "write_arrays", write)
    return record


def _monitor(model, directory, clock, checkpoint_every=1000, checkpoint_every_s=300.0):
    state = {"step": 0, "history": [], "wall_time_s": 0.0, "epoch_elapsed_s": 0.0, "resumed_at_steps": [],
             "metric_values": None}
    monitor = RunMonitor(state, 100, lambda *a, **k: None, str(directory), checkpoint_every, checkpoint_every_s,
                         clock=clock)
    monitor.set_model(model)
    monitor.on_epoch_begin(0)
    return monitor


def _end_call(monitor, model, step):
    model.optimizer.iterations.assign(step)
    monitor.on_train_batch_end(step - 1)


@pytest.mark.backend_agnostic
def test_snapshot_reads_current_values_in_file_order(model):
    read = checkpoint.reader(checkpoint.variables(model))
    kernel = model.layers[0].kernel
    for shift in (0.0, 1.5):
        kernel.assign(keras.ops.convert_to_numpy(kernel) + shift)
        model.optimizer.iterations.assign(7 + int(shift))
        arrays = checkpoint.snapshot(model, {"shift": shift}, read)
        expected = {f"{g}/{i}": checkpoint.to_numpy(v) for g, vs in checkpoint._groups(model).items()
                    for i, v in enumerate(vs)}
        assert sorted(arrays) == sorted([*expected, "meta"]) and str(arrays["meta"]) == f'{{"shift": {shift}}}'
        for key, value in expected.items():
            np.testing.assert_array_equal(arrays[key], value, err_msg=key)


@pytest.mark.backend_agnostic
def test_wall_time_trigger_follows_the_clock(model, tmp_path, writes):
    now = [0.0]
    monitor = _monitor(model, tmp_path, lambda: now[0])
    for step, t in [(8, 100.0), (16, 301.0), (24, 400.0), (32, 601.0), (40, 700.0)]:
        now[0] = t
        _end_call(monitor, model, step)
        monitor.writer.join()
    monitor.close()
    assert writes["steps"] == [16, 32]  # 300 s after the start, then 300 s after the previous checkpoint


@pytest.mark.backend_agnostic
def test_steps_trigger_without_wall_time(model, tmp_path, writes):
    monitor = _monitor(model, tmp_path, lambda: 1e9, checkpoint_every=16, checkpoint_every_s=0.0)
    for step in (8, 16, 24, 32, 40, 48):
        _end_call(monitor, model, step)
        monitor.writer.join()
    monitor.close()
    assert writes["steps"] == [16, 32, 48]


@pytest.mark.backend_agnostic
def test_a_due_checkpoint_waits_for_the_write_in_flight_and_the_snapshot_is_taken_at_save(model, tmp_path,
                                                                                          writes):
    now = [0.0]
    monitor = _monitor(model, tmp_path, lambda: now[0], checkpoint_every_s=10.0)
    kernel = model.layers[0].kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    writes["gate"].clear()
    now[0] = 20.0
    _end_call(monitor, model, 8)  # due: snapshot now, written in the background (held back)
    assert monitor.writer.busy()
    kernel.assign(before + 1.0)  # training goes on while the write is in flight
    now[0] = 40.0
    _end_call(monitor, model, 16)  # due again, but one write is in flight: deferred, training not stalled
    assert monitor.writer.busy() and writes["steps"] == []
    writes["gate"].set()
    monitor.writer.join()
    now[0] = 41.0
    _end_call(monitor, model, 24)  # the deferred checkpoint, at the next call's end
    monitor.close()
    assert writes["steps"] == [8, 24]
    with np.load(tmp_path / checkpoint.STATE_FILE) as z:
        np.testing.assert_array_equal(z["model/0"], before + 1.0)
    # The step-8 file held the kernel as it was at step 8, although it was written after the change.
    writes["gate"].clear()
    kernel.assign(before)
    monitor = _monitor(model, tmp_path, lambda: now[0], checkpoint_every_s=10.0)
    now[0] = 100.0
    _end_call(monitor, model, 32)
    kernel.assign(before + 5.0)
    writes["gate"].set()
    monitor.close()
    with np.load(tmp_path / checkpoint.STATE_FILE) as z:
        np.testing.assert_array_equal(z["model/0"], before)


@pytest.mark.backend_agnostic
def test_a_failed_write_is_raised_not_swallowed(model, tmp_path, writes):
    now = [0.0]
    monitor = _monitor(model, tmp_path, lambda: now[0], checkpoint_every_s=10.0)
    writes["fail"] = OSError("No space left on device")
    now[0] = 20.0
    _end_call(monitor, model, 8)
    with pytest.raises(RuntimeError, match="writing the checkpoint in .* failed: No space left on device"):
        monitor.close()
    # At the next due checkpoint, when training is still running.
    monitor = _monitor(model, tmp_path, lambda: now[0], checkpoint_every_s=10.0)
    now[0] = 40.0
    _end_call(monitor, model, 16)
    monitor.writer._pending.exception(timeout=30)  # the write has failed
    with pytest.raises(RuntimeError, match="No space left on device"):
        _end_call(monitor, model, 24)
    monitor.close(failing=True)  # already reported: a run failing for another reason only logs it


def test_checkpoint_every_s_setting():
    assert RunSpec().checkpoint_every_s == 300.0
    assert "checkpoint_every_s" not in RunSpec().identity()  # an execution setting: may change on resume
    assert RunSpec(checkpoint_every_s=0).checkpoint_every_s == 0
    for bad in (-1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError, match=r"checkpoint_every_s=.* must be a number of seconds >= 0") as err:
            RunSpec(checkpoint_every_s=bad)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("value, message", [("-5", "checkpoint_every_s"), ("nan", "checkpoint_every_s=nan")])
def test_bad_checkpoint_every_s_flag_exits_2_with_one_line(value, message, tmp_path, capsys):
    argv = ["mk-train", "--dataset=digits", f"--run_dir={tmp_path / 'run'}", f"--checkpoint_every_s={value}"]
    assert mk_train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.backend_agnostic
def test_step_timer_takes_the_median_call_after_each_fits_first():
    now = [0.0]
    timer = StepTimer(steps_per_execution=2, clock=lambda: now[0])
    assert timer.steady_step_s() is None  # no call yet

    def fit(durations):
        timer.on_train_begin()
        for i, seconds in enumerate(durations):
            timer.on_train_batch_begin(i)
            now[0] += seconds
            timer.on_train_batch_end(i)

    fit([5.0])
    assert timer.steady_step_s() == 2.5  # only a first call (which traced): that one, per step
    fit([4.0, 1.0, 1.0, 3.0])  # a second fit (a resume) traces again: its first call is left out too
    fit([6.0, 2.0])
    assert timer.first == [5.0, 4.0, 6.0] and timer.steady == [1.0, 1.0, 3.0, 2.0]
    assert timer.steady_step_s() == 0.75  # median 1.5 s per call of 2 steps


@pytest.mark.backend_agnostic
def test_writers_of_one_model_share_its_compiled_read_until_its_variables_change(model, tmp_path, monkeypatch):
    made = []
    real = checkpoint.reader
    monkeypatch.setattr(checkpoint, "reader", lambda vs: made.append(len(vs)) or real(vs))
    for run in range(2):  # two runs on one model (a sweep's reused model): one read is made
        writer = checkpoint.BackgroundWriter(str(tmp_path / f"run{run}"))
        writer.save(model, {"step": run})
        writer.close()
    before = len(checkpoint.variables(model))
    assert made == [before]
    model.compile(optimizer="sgd", loss="mse")  # another optimizer and metrics: another set of variables
    writer = checkpoint.BackgroundWriter(str(tmp_path / "recompiled"))
    writer.save(model, {"step": 2})
    writer.close()
    assert made == [before, len(checkpoint.variables(model))] and made[1] != before
    with np.load(tmp_path / "recompiled" / checkpoint.STATE_FILE) as z:
        saved = [z[f"model/{i}"] for i in range(len(model.variables))]
    for value, variable in zip(saved, model.variables, strict=True):
        np.testing.assert_array_equal(value, checkpoint.to_numpy(variable))
