"""Custom layers: layer scale, stochastic depth, GRN, LayerNorm, the exact GELU (used by the builders) and
`MasterKeyDepthwiseConv2D` (frozen master keys with a learnable shift, made by `mk_keras.assign_master_keys`).

All are backend-agnostic Keras 3 layers/functions, registered for `.keras` serialisation.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mk_keras")
def gelu(x):
    """Exact (erf) GELU, `x * Phi(x)`, with a hand-written gradient `Phi(x) + x * phi(x)`.

    Same function as `keras.activations.gelu(x, approximate=False)` (and torch's default `nn.GELU`) up to
    float rounding; the closed-form gradient reuses `Phi(x)` from the forward pass and needs fewer
    elementwise ops than automatic differentiation of erf, which the TensorFlow executor runs one by one
    (ConvNeXt-atto train step on a 2-core CPU: about 3 % less CPU time, docs/performance.md).
    """

    @ops.custom_gradient
    def _gelu(x):
        cdf = 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            pdf = ops.exp(-0.5 * ops.square(x)) * (1.0 / math.sqrt(2.0 * math.pi))
            return upstream * (cdf + x * pdf)

        return x * cdf, grad

    return _gelu(x)


def _layer_norm(x, gamma, beta, epsilon):
    """Layer normalisation over the last axis with the closed-form gradient."""

    @ops.custom_gradient
    def forward(x, gamma, beta):
        centred = x - ops.mean(x, axis=-1, keepdims=True)
        inv_std = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
        x_hat = centred * inv_std

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g = upstream * gamma
            dx = inv_std * (g - ops.mean(g, axis=-1, keepdims=True)
                            - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True))
            batch_axes = tuple(range(len(x.shape) - 1))
            return dx, ops.sum(upstream * x_hat, axis=batch_axes), ops.sum(upstream, axis=batch_axes)

        return x_hat * gamma + beta, grad

    return forward(x, gamma, beta)


@keras.saving.register_keras_serializable(package="mk_keras")
class LayerNorm(keras.layers.LayerNormalization):
    """`LayerNormalization` over the last axis (with scale and offset) and a closed-form gradient.

    Same weights, config and function as the base class, statistics in float32 under mixed precision. The
    gradient `dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))`, `g = dy * gamma`, reuses the forward
    pass's `x_hat` instead of differentiating the moments op by op, which the TensorFlow executor runs one
    by one (ConvNeXt-atto train step on a 2-core CPU: about 3-5 % less CPU time, docs/performance.md).
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(axis=axis, epsilon=epsilon, **kwargs)
        if self.axis not in (-1, [-1]) or not (self.center and self.scale) or self.rms_scaling:
            raise ValueError(f"LayerNorm normalises the last axis with scale and offset; got axis={axis!r}, "
                             f"center={self.center}, scale={self.scale}, rms_scaling={self.rms_scaling}")

    def call(self, inputs):
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        outputs = _layer_norm(
            ops.cast(inputs, dtype), ops.cast(self.gamma, dtype), ops.cast(self.beta, dtype), self.epsilon
        )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="mk_keras")
class LayerScale(keras.layers.Layer):
    """Per-channel learnable scale `gamma * x` (ConvNeXt V1), gamma starts at `init_value`."""

    def __init__(self, init_value=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="mk_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops the residual branch per sample with probability `rate` during training.

    Called on the residual branch only; the survivors are scaled by 1 / (1 - rate).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate={rate!r} must be in [0, 1).")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mk_keras")
class GlobalResponseNormalization(keras.layers.Layer):
    """ConvNeXt V2 GRN: x + gamma * (x * N(x)) + beta, N = L2 over space / its channel mean."""

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        gx = ops.sqrt(ops.sum(ops.square(x), axis=(1, 2), keepdims=True))
        nx = gx / (ops.mean(gx, axis=-1, keepdims=True) + self.epsilon)
        gamma = ops.cast(self.gamma, x.dtype)
        beta = ops.cast(self.beta, x.dtype)
        return gamma * (x * nx) + beta + x

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="mk_keras")
class MasterKeyDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`DepthwiseConv2D` whose filter for channel c is `kernel[..., c] + shift[c]` (the fit a*x̂+b up to the scale a).

    The `kernel` variable is created non-trainable (variable-level `trainable=False`, set in `build`, so it
    survives compile, fit, `get_config`/`from_config` and `.keras` save/load); `shift` (one value per output
    channel, initialised to 0) and the bias stay trainable. Setting `layer.trainable = False` freezes all.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel.trainable = False
        self.shift = self.add_weight(
            name="shift", shape=(self.kernel.shape[-2] * self.kernel.shape[-1],), initializer="zeros"
        )

    @property
    def effective_kernel(self):
        """The filters the layer applies: kernel + shift broadcast over the spatial axes."""
        return self.kernel + ops.reshape(self.shift, (1, 1) + tuple(self.kernel.shape[2:]))

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs,
            self.effective_kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            channel_axis = -1 if self.data_format == "channels_last" else 1
            shape = [1] * len(outputs.shape)
            shape[channel_axis] = self.bias.shape[0]
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


def preprocessing(x, channels, name="preprocess"):
    """Raw pixels in [0, 255] -> normalised inputs, inside the model so exports take raw images.

    3 channels use the ImageNet mean/std; other channel counts use mean 0.5, std 0.25 (of [0, 1]).
    """
    x = keras.layers.Rescaling(1.0 / 255.0, name=f"{name}_rescale")(x)
    if channels == 3:
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        mean, std = [0.5] * channels, [0.25] * channels
    return keras.layers.Normalization(
        mean=mean, variance=[s * s for s in std], name=f"{name}_normalize"
    )(x)
