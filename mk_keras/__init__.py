"""mk_keras: tools for the Master Key Filters Hypothesis on Keras 3.

Public API: `create_model`, `list_models`, `filter_layers`, `transfer_filters`, `freeze_filters`,
`master_keys`, `assign_master_keys`, `export_saved_model`, `verify_saved_model`; subpackages `data`,
`training`, `experiments`, `analysis` (import it explicitly: it needs scikit-learn and matplotlib, which
`import mk_keras` does not load).

`mk_keras.master_keys` is the function (the module of the same name is reached with
`from mk_keras.master_keys import ...`).
"""

__version__ = "0.1.0"

from mk_keras.export import export_saved_model, verify_saved_model
from mk_keras.filters import FILTER_KINDS, FilterLayer, filter_layers
from mk_keras.master_keys import assign_master_keys, fit_master_keys, master_keys
from mk_keras.models import create_model, list_models, model_family
from mk_keras.transfer import TransferReport, freeze_filters, transfer_filters
from mk_keras.training import optimizer as _optimizer  # noqa: F401  registers mk_keras>AdamW for load_model

__all__ = [
    "FILTER_KINDS",
    "FilterLayer",
    "TransferReport",
    "assign_master_keys",
    "create_model",
    "export_saved_model",
    "filter_layers",
    "fit_master_keys",
    "freeze_filters",
    "list_models",
    "master_keys",
    "model_family",
    "transfer_filters",
    "verify_saved_model",
]
