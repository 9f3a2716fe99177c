"""`MasterKeyDepthwiseConv2D`: a depthwise convolution with a frozen kernel and a learnable per-channel shift."""

import keras
from keras import ops


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
