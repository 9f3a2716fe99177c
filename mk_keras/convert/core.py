"""Checkpoint tensors -> Keras variables: reading state dicts and applying a name mapping with exact checks.

A family converter lists `Assign(variable, key, layout)` entries for a target model; `apply_mapping` checks the
whole list against the checkpoint first (missing keys, unexpected keys, shapes) and raises one line naming them,
then assigns every variable, so a checkpoint that does not match leaves the model untouched.

Layouts (PyTorch -> Keras): "conv" OIHW -> HWIO, "depthwise" (C, 1, H, W) -> (H, W, C, 1), "dense" (out, in)
-> (in, out), "pointwise" a 1x1 conv (out, in, 1, 1) used as a Dense kernel -> (in, out), "same" as stored.
`keras_state` gives a Keras model's weights in the same {key: array} form (keys: variable paths), so
keras.applications models convert through the same checks.
"""

import dataclasses
import os

import numpy as np

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# state-dict entries that carry no weights of the model (BatchNorm's step counter, attention masks ...)
IGNORED_SUFFIXES = ("num_batches_tracked",)
# wrappers of a state dict in training checkpoints: {"model": {...}}, {"state_dict": {...}}, {"model_ema": ...}
_WRAPPERS = ("model", "state_dict", "model_ema", "module")
_STRIP_PREFIXES = ("module.", "model.")
_LIST_LIMIT = 6

LAYOUTS = {
    "conv": lambda a: np.transpose(a, (2, 3, 1, 0)),
    "depthwise": lambda a: np.transpose(a, (2, 3, 0, 1)),
    "dense": lambda a: np.transpose(a, (1, 0)),
    "pointwise": lambda a: np.transpose(a.reshape(a.shape[0], a.shape[1]), (1, 0)),
    "same": lambda a: a,
}


@dataclasses.dataclass(frozen=True)
class Assign:
    """Copy checkpoint tensor `key`, converted by `layout` (a `LAYOUTS` key or a function), into `variable`."""

    variable: object  # a keras.Variable
    key: str
    layout: object = "same"


def read_checkpoint(path):
    """A checkpoint file's state dict as {name: float32/int numpy array}.

    `.safetensors` files are read with the `safetensors` package; `.pth`/`.pt`/`.bin` with
    `torch.load(weights_only=True)` (torch must be installed). Training checkpoints wrapping the state dict
    under "model", "state_dict", "model_ema" or "module" are unwrapped, and "module."/"model." key prefixes
    (DataParallel, timm EMA) stripped. Raises FileNotFoundError / ValueError in one line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not path.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(f"checkpoint {path!r}: unknown file type; allowed: {', '.join(CHECKPOINT_SUFFIXES)}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            state = load_file(path)
        else:
            state = _torch_load(path)
    except (ImportError, FileNotFoundError):
        raise
    except Exception as e:  # corrupt files raise pickle, zip, safetensors or torch errors alike
        raise ValueError(f"cannot read checkpoint {path!r} ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    return _unwrap(state, path)


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path!r} needs PyTorch (pip install torch), or convert it to .safetensors") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _to_numpy(state)


def _to_numpy(obj):
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if hasattr(obj, "detach"):  # a torch.Tensor
        tensor = obj.detach().cpu()
        return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    return obj


def _unwrap(state, path):
    while isinstance(state, dict):
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        if arrays:
            break
        inner = next((state[w] for w in _WRAPPERS if isinstance(state.get(w), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"checkpoint {path!r} holds no state dict of tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            continue
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
    return out


def keras_state(model):
    """A Keras model's weights as {variable path: numpy array}; raises ValueError on a path held twice."""
    import keras

    state = {}
    for v in model.weights:
        if v.path in state:
            raise ValueError(f"model {model.name!r} holds two variables at path {v.path!r}")
        state[v.path] = np.asarray(keras.ops.convert_to_numpy(v))
    return state


def apply_mapping(assigns, state, label, ignore=()):
    """Check `assigns` against `state` (missing/unexpected keys, shapes), then assign every variable.

    label: names the checkpoint and target in messages, e.g. "'ckpt.pth' -> convnext_tiny".
    ignore: extra key suffixes the target has no use for (they are not reported as unexpected).
    Raises ValueError in one line naming missing and unexpected keys and shape mismatches; nothing is
    assigned then.
    """
    used = {a.key for a in assigns}
    missing = sorted(k for k in used if k not in state)
    skip = IGNORED_SUFFIXES + tuple(ignore)
    unexpected = sorted(k for k in state if k not in used and not k.endswith(skip))
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    values = []
    if not problems:
        for a in assigns:
            layout = LAYOUTS[a.layout] if isinstance(a.layout, str) else a.layout
            value = np.asarray(layout(state[a.key]))
            want = tuple(a.variable.shape)
            if value.shape != want:
                problems.append(f"{a.key} has shape {tuple(state[a.key].shape)} -> {value.shape}, "
                                f"{a.variable.path} needs {want}")
            values.append(value)
    if problems:
        raise ValueError(f"checkpoint {label} does not match: " + "; ".join(problems[:_LIST_LIMIT]))
    for a, value in zip(assigns, values):
        a.variable.assign(value.astype(a.variable.dtype))


def _few(keys):
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")
