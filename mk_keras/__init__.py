"""mk_keras: tools for the Master Key Filters Hypothesis on Keras 3.

Public API: `create_model`, `list_models`, `filter_layers`, `transfer_filters`, `freeze_filters`.
"""

__version__ = "0.1.0"

from mk_keras.export import export_saved_model, verify_saved_model
from mk_keras.filters import FILTER_KINDS, FilterLayer, filter_layers
from mk_keras.models import create_model, list_models, model_family
from mk_keras.transfer import TransferReport, freeze_filters, transfer_filters

__all__ = [
    "FILTER_KINDS",
    "FilterLayer",
    "TransferReport",
    "create_model",
    "export_saved_model",
    "filter_layers",
    "freeze_filters",
    "list_models",
    "model_family",
    "transfer_filters",
    "verify_saved_model",
]
