"""torchvision ResNet / MobileNetV2 and keras.applications ResNet50 / MobileNetV2 -> mk_keras: same logits.

References get random weights with BatchNorm statistics from a batch (so every layer's normalisation matters)
and random affine parameters (and, for ResNet50, conv biases); inputs are raw pixels, 64 px. As in trained
ResNets (and torchvision's `zero_init_residual`), the last BatchNorm of each residual branch gets a small gamma
(0.1-0.5): with gamma near 1 a random ResNet-50 is so ill-conditioned that 1e-7 of input noise moves its own
logits by ~1e-4, and no conversion could be checked at that tolerance.
Under JAX (every layer shape compiles on first use: minutes on 2 cores) only ResNet-18 and the mismatch run.
"""

import numpy as np
import pytest

import torch  # the test extra installs torch and torchvision
import torchvision

import keras  # noqa: E402

from mk_keras.convert import core, mobilenet, resnet  # noqa: E402
from mk_keras.models import create_model  # noqa: E402
from mk_keras.models.conventions import read_conventions  # noqa: E402

SIZE = 64
TOL = 1e-4
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def _pixels(n, seed):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _stats_pixels():
    """The batch the BatchNorm statistics come from: the compared images and six more (as a trained model's
    statistics fit its data; statistics of other images leave the random network ill-conditioned)."""
    return np.concatenate([_pixels(2, 3), _pixels(6, 2)])


def _torch_input(pixels):
    return torch.from_numpy(((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def _torch_reference(builder):
    """A torchvision model with BatchNorm statistics of one random batch and random affine parameters."""
    torch.manual_seed(0)
    net = builder(num_classes=10)
    gen = torch.Generator().manual_seed(1)
    branch_ends = {id(b.bn2) for b in net.modules() if isinstance(b, torchvision.models.resnet.BasicBlock)}
    branch_ends |= {id(b.bn3) for b in net.modules() if isinstance(b, torchvision.models.resnet.Bottleneck)}
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
            low, high = (0.1, 0.5) if id(m) in branch_ends else (0.5, 1.5)
            with torch.no_grad():
                m.weight.copy_(low + (high - low) * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
    net.train()
    with torch.no_grad():
        net(_torch_input(_stats_pixels()))
    return net.eval()


def _torch_case(builder, name):
    net = _torch_reference(builder)
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    converter = resnet if name.startswith("resnet") else mobilenet
    model = create_model(name, converter.checkpoint_num_classes(state), input_shape=(SIZE, SIZE, 3),
                         **converter.build_overrides("torch"))
    core.apply_mapping(converter.torch_assigns(model, state), state, f"torchvision {name}")
    pixels = _pixels(2, 3)
    with torch.no_grad():
        want = net(_torch_input(pixels)).numpy()
    return model, pixels, want


@pytest.mark.parametrize("builder, name", [
    pytest.param(torchvision.models.resnet18, "resnet18", marks=pytest.mark.backend_agnostic),
    (torchvision.models.mobilenet_v2, "mobilenetv2"),
])
def test_torchvision_logits_match_and_the_options_round_trip(builder, name):
    model, pixels, want = _torch_case(builder, name)
    got = keras.ops.convert_to_numpy(model(pixels, training=False))
    assert np.abs(want).max() > 0.1  # a meaningful comparison, not two near-zero outputs
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    clone = keras.Model.from_config(model.get_config())  # the builder options live in the layers' configs
    clone.set_weights(model.get_weights())
    assert read_conventions(clone) == {"padding": "symmetric", "bn_epsilon": 1e-5, "preprocessing": "imagenet"}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(pixels, training=False)), got, rtol=0, atol=1e-6)


def _keras_reference(app_builder, tmp_path):
    """keras.applications model with random BatchNorm statistics (one batch), affine params and conv biases,
    saved with save_weights and loaded into a fresh instance."""
    kwargs = {"weights": None, "input_shape": (SIZE, SIZE, 3), "classes": 10, "classifier_activation": None}
    app = app_builder(**kwargs)
    rng = np.random.default_rng(4)
    for layer in app.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            low, high = (0.1, 0.5) if layer.name.endswith("_3_bn") else (0.5, 1.5)  # ResNet50 branch ends
            layer.gamma.assign(rng.uniform(low, high, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
            layer.momentum = 0.0
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias and layer.name != "predictions":
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
    preprocess = _keras_preprocess(app_builder)
    app(preprocess(_stats_pixels()), training=True)  # moving statistics = this batch's
    path = str(tmp_path / "app.weights.h5")
    app.save_weights(path)
    fresh = app_builder(**kwargs)
    fresh.load_weights(path)
    return fresh, preprocess


def _keras_preprocess(app_builder):
    module = keras.applications.resnet50 if app_builder is keras.applications.ResNet50 else \
        keras.applications.mobilenet_v2
    return lambda pixels: module.preprocess_input(pixels.copy())


@pytest.mark.parametrize("app_builder, name", [(keras.applications.ResNet50, "resnet50"),
                                               (keras.applications.MobileNetV2, "mobilenetv2")])
def test_keras_applications_logits_match(app_builder, name, tmp_path):
    app, preprocess = _keras_reference(app_builder, tmp_path)
    converter = resnet if name.startswith("resnet") else mobilenet
    assert converter.KERAS_APPLICATIONS[app_builder.__name__] == name
    model = create_model(name, 10, input_shape=(SIZE, SIZE, 3), **converter.build_overrides("keras"))
    core.apply_mapping(converter.keras_assigns(model, app), core.keras_state(app), f"keras {name}")
    pixels = _pixels(2, 3)
    want = keras.ops.convert_to_numpy(app(preprocess(pixels), training=False))
    got = keras.ops.convert_to_numpy(model(pixels, training=False))
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.backend_agnostic
def test_mismatched_state_dict_names_missing_and_unexpected_keys_and_assigns_nothing():
    state = {k: v.numpy() for k, v in torchvision.models.resnet18(num_classes=10).state_dict().items()}
    state["layer9.0.conv1.weight"] = state.pop("layer4.1.conv2.weight")
    model = create_model("resnet18", 10, input_shape=(SIZE, SIZE, 3), **resnet.build_overrides("torch"))
    before = model.get_layer("stem_conv").kernel.numpy().copy()
    with pytest.raises(ValueError) as err:
        core.apply_mapping(resnet.torch_assigns(model, state), state, "'bad.pth' -> resnet18")
    message = str(err.value)
    assert "\n" not in message
    assert "missing keys layer4.1.conv2.weight" in message and "unexpected keys layer9.0.conv1.weight" in message
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), before)


@pytest.mark.parametrize("converter, name", [(resnet, "resnet18"), (mobilenet, "mobilenetv2")])
def test_target_built_without_the_overrides_is_refused(converter, name):
    model = create_model(name, 10, input_shape=(SIZE, SIZE, 3))  # Keras 'same' padding: a different function
    with pytest.raises(ValueError, match="padding='same'.*build_overrides"):
        converter.torch_assigns(model, {})
    with pytest.raises(ValueError, match="source='caffe'; allowed"):
        converter.build_overrides("caffe")
