"""Weight initialisers of the reference implementations, as Keras built-in initialisers (docs/models.md).

Each function returns a NEW initialiser: an unseeded Keras initialiser takes its seed from Python's `random`
when it is constructed (which `keras.utils.set_random_seed` seeds) and then returns the same values on every
call, so one instance shared by two layers would give both the same kernel. Built-ins only, so saved models
load without registration.
"""

import math

import keras


def trunc_normal_02():
    """ConvNeXt (timm / facebookresearch `trunc_normal_(std=.02)`): normal, std 0.02.

    timm truncates at the absolute values -2 and 2 (100 standard deviations), which never happens in
    float32, so this is an untruncated normal; Keras' `TruncatedNormal(stddev=0.02)` would cut at 2 std and
    give std 0.0176.
    """
    return keras.initializers.RandomNormal(stddev=0.02)


def kaiming_normal_fan_out():
    """torchvision `kaiming_normal_(mode="fan_out", nonlinearity="relu")` for a regular conv kernel:
    normal, std sqrt(2 / (kh * kw * C_out))."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def kaiming_normal_fan_out_depthwise(depth_multiplier=1):
    """torchvision's `kaiming_normal_(mode="fan_out")` on a depthwise conv: torch computes the fan-out of the
    (C * m, 1, kh, kw) weight as C * m * kh * kw (the groups are ignored), so std sqrt(2 / (C * m * kh * kw)).

    Keras' fan-in of the (kh, kw, C, m) depthwise kernel is kh * kw * C, hence scale 2 / m in fan-in mode.
    """
    return keras.initializers.VarianceScaling(
        2.0 / depth_multiplier, mode="fan_in", distribution="untruncated_normal"
    )


def torch_linear_default(fan_in):
    """PyTorch's default `nn.Linear` initialisation: kernel and bias uniform in +-1/sqrt(fan_in).

    Returns `(kernel_initializer, bias_initializer)`; the kernel is `kaiming_uniform_(a=sqrt(5))`, i.e.
    VarianceScaling(1/3, fan_in, uniform) (limit sqrt(3 * (1/3) / fan_in)).
    """
    bound = 1.0 / math.sqrt(fan_in)
    return (
        keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
        keras.initializers.RandomUniform(-bound, bound),
    )
