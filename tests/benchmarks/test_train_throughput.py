"""The training-throughput harness: the PyTorch reference is the same network, and the harness runs and writes
JSON. Needs PyTorch (the `bench` extra); skipped without it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import keras  # noqa: E402

import mk_keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch_reference  # noqa: E402
import train_throughput  # noqa: E402


def _copy_keras_weights(keras_model, torch_model):
    """Copy the Keras weights into the torch model, layer by layer in forward order."""
    keras_layers = [l for l in keras_model.layers if l.weights and not l.name.startswith("preprocess")]
    torch_layers = [m for m in torch_model.modules()
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.LayerNorm))]
    blocks = [m for m in torch_model.modules() if isinstance(m, torch_reference.Block)]
    scales = iter(b.gamma for b in blocks)
    torch_iter = iter(torch_layers)
    with torch.no_grad():
        for layer in keras_layers:
            values = [np.asarray(w) for w in layer.get_weights()]
            if layer.name.endswith("_layer_scale"):
                next(scales).copy_(torch.from_numpy(values[0]))
                continue
            module = next(torch_iter)
            kernel = values[0]
            if isinstance(module, torch.nn.Conv2d):  # (kh, kw, in or C, out or 1) -> (out or C, in or 1, kh, kw)
                kernel = kernel.transpose(2, 3, 0, 1) if module.groups > 1 else kernel.transpose(3, 2, 0, 1)
            elif isinstance(module, torch.nn.Linear):
                kernel = kernel.T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            module.bias.copy_(torch.from_numpy(values[1]))
        assert next(torch_iter, None) is None and next(scales, None) is None


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name", ["convnext_micro_cifar", "convnext_atto_cifar"])
def test_torch_reference_is_the_same_network(name):
    keras_model = mk_keras.create_model(name, num_classes=7)
    depths, widths, stem = train_throughput.convnext_config(name)
    torch_model = torch_reference.ConvNeXt(depths, widths, num_classes=7, stem_stride=stem)
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert sum(p.numel() for p in torch_model.parameters()) == trainable
    assert len(torch_model.depthwise_convs()) == len(mk_keras.filter_layers(keras_model, "depthwise"))

    _copy_keras_weights(keras_model, torch_model)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = np.asarray(keras_model(x))
    got = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.backend_agnostic
def test_freezing_matches_between_frameworks():
    keras_model = mk_keras.create_model("convnext_micro_cifar", num_classes=4)
    torch_model = torch_reference.ConvNeXt(*train_throughput.convnext_config("convnext_micro_cifar")[:2], 4, 3, 2)
    for n in (2, 5):
        mk_keras.freeze_filters(keras_model, n)
        torch_reference.freeze_depthwise(torch_model, n)
        keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
        assert sum(p.numel() for p in torch_model.parameters() if p.requires_grad) == keras_trainable


@pytest.mark.long  # 29 s: end-to-end run of the benchmark script
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the cpu mode runs Keras on TensorFlow")
def test_cpu_mode_runs_and_writes_json(tmp_path):
    flagfile = tmp_path / "tiny_sweep.flags"
    flagfile.write_text("--name=tiny\n--dataset_a=digits\n--classes_a=0,1,2,3,4\n--classes_b=5,6,7,8,9\n"
                        "--max_per_class=8\n--eval_max_per_class=4\n--epochs=1\n--batch_size=8\n--eval_every=0\n")
    out = tmp_path / "result.json"
    train_throughput.main([
        "--model=convnext_micro_cifar", "--batch=4", "--steps=2", "--rounds=2", "--warmup=0",
        "--freeze=none,depthwise", "--pipeline_batches=2", f"--sweep_flagfile={flagfile}", f"--out={out}",
    ])
    result = json.loads(out.read_text())
    assert set(result["throughput"]) == {"keras/none", "torch_eager/none", "keras/depthwise", "torch_eager/depthwise"}
    for entry in result["throughput"].values():
        assert len(entry["images_per_s"]["rounds"]) == 2 and entry["images_per_s"]["median"] > 0
    assert result["throughput"]["keras/none"]["trainable_params"] == result["throughput"]["torch_eager/none"][
        "trainable_params"]
    assert {"keras_vs_torch_eager/none", "keras_frozen_speedup/depthwise"} <= set(result["ratios"])
    # Frozen depthwise kernels get no gradient op at all: 5 filter-gradient ops per step unfrozen, 0 frozen.
    assert result["frozen_check"]["none"]["executed_depthwise_filter_grads_per_step"] == 5
    assert result["frozen_check"]["depthwise"]["executed_depthwise_filter_grads_per_step"] == 0
    assert result["input_pipeline"]["images_per_s"] > 0
    overhead = result["sweep_overhead"]
    (run,) = overhead["runs"]
    assert run["steps"] == 5 and 0 < run["steady_training_s"] < run["run_s"] < overhead["sweep_s"]
    assert 0 < overhead["overhead_share_per_run"] < overhead["overhead_share_of_sweep"] < 1
    assert set(result["targets"]) == {"keras_vs_torch_eager/none", "keras_frozen_speedup/depthwise",
                                      "input_pipeline_vs_keras_training", "sweep_overhead_share"}


@pytest.mark.slow
@pytest.mark.long  # 45 s: end-to-end run of the benchmark script in a subprocess
def test_gpu_mode_runs_on_cpu_without_tensorflow(tmp_path):
    """The GPU mode must not need TensorFlow: run it as if TensorFlow were not installed."""
    out = tmp_path / "gpu.json"
    block_tf = (  # `import tensorflow` raises ModuleNotFoundError; find_spec finds no file (torch asks it)
        "import importlib.machinery, runpy, sys\n"
        "class NoTF:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'tensorflow':\n"
        "            return importlib.machinery.ModuleSpec(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'No module named {spec.name!r}', name=spec.name)\n"
        "sys.meta_path.insert(0, NoTF())\n"
        "sys.argv = ['train_throughput.py'] + sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    args = ["--mode=gpu", "--allow_cpu", "--model=convnext_micro_cifar", "--batch=2", "--image_size=32",
            "--steps=1", "--rounds=1", "--warmup=0", "--frameworks=keras,torch_eager", f"--out={out}"]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", block_tf, *args], cwd=os.path.join(ROOT, "benchmarks"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tensorflow_imported"] is False
    assert result["throughput"]["keras/none"]["policy"] == "mixed_bfloat16"
    assert result["throughput"]["keras/none"]["trainable_params"] == result["throughput"]["torch_eager/none"][
        "trainable_params"]
    assert "keras_vs_torch_eager/none" in result["ratios"]
