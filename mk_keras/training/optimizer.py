"""`AdamW`: Keras' AdamW, cheaper to trace and to run on the TensorFlow backend.

Keras' TensorFlow optimizer builds ~25 graph ops per variable and step: the learning-rate schedule is evaluated
again for every decayed variable, and the Adam update is a chain of elementwise ops. Here, on TensorFlow, the
schedule and the shared scalars are computed once per step, and each float32 variable's update is the fused
`ResourceApplyAdam` kernel (the kernel tf.keras 2 used): `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
`var -= m alpha / (sqrt(v) + eps)`, `alpha = lr sqrt(1 - b2^t) / (1 - b1^t)`, Keras' formula in one pass.
The kernel rounds `1 - b1` and `1 - b2` in float32 where Keras rounds them in float64 (for the default
b2 = 0.999 they differ by 1.3e-5 relative); with betas whose `1 - beta` is exact in float32 the results are
bit-identical to Keras (tests/training/test_optimizer.py). Other backends, AMSGrad and non-float32 variables
use Keras' code unchanged.
"""

import keras


@keras.saving.register_keras_serializable(package="mk_keras")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (same arguments and update), with a fused update step on TensorFlow."""

    def _apply_weight_decay(self, variables):
        if keras.backend.backend() != "tensorflow" or self.weight_decay is None:
            return super()._apply_weight_decay(variables)
        import tensorflow as tf

        decayed = [v.value if isinstance(v, keras.Variable) else v for v in variables if self._use_weight_decay(v)]
        if not decayed:
            return

        def decay(variable, lr, wd):
            # Keras' expression and rounding: variable - (variable * wd) * lr
            variable.assign_sub(variable * tf.cast(wd, variable.dtype) * tf.cast(lr, variable.dtype))

        def apply(distribution, variables, lr, wd):
            for variable in variables:
                distribution.extended.update(variable, decay, args=(lr, wd), group=False)

        # The schedule once per step (Keras: once per variable); merge_call hands lr per replica to `update`.
        tf.__internal__.distribute.interim.maybe_merge_call(
            apply, self._distribution_strategy, decayed, tf.cast(self.learning_rate, "float32"),
            tf.cast(self.weight_decay, "float32"))

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """TensorFlow backend only: Keras calls it once per step, in cross-replica context."""
        if self.amsgrad:
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, "float32")
        # Shared scalars once per step (Keras: once per variable); `learning_rate` may be per replica, so it
        # reaches each device through `update`.
        beta1, beta2 = tf.constant(self.beta_1, "float32"), tf.constant(self.beta_2, "float32")
        scalars = {"beta1": beta1, "beta2": beta2, "epsilon": tf.constant(self.epsilon, "float32"),
                   "beta1_power": tf.pow(beta1, step), "beta2_power": tf.pow(beta2, step)}

        def fused_update(variable, gradient, lr, scalars):
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
                lr=tf.cast(lr, "float32"), grad=tf.cast(gradient, "float32"), use_locking=False, **scalars,
            )

        def keras_update(variable, gradient, lr, scalars):
            self.update_step(gradient, variable, lr)

        for grad, var in grads_and_vars:
            update = fused_update if var.dtype == tf.float32 else keras_update
            distribution.extended.update(var, update, args=(grad, learning_rate, scalars), group=False)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (the per-device one inside a distributed update)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
