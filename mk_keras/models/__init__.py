"""Model builders; importing this package registers every family."""

from mk_keras.models import alexnet, convnext, hornet, mobilenet, resnet  # noqa: F401  (registration)
from mk_keras.models.registry import create_model, list_models, model_family, model_revision, register_model

__all__ = ["create_model", "list_models", "model_family", "model_revision", "register_model"]
