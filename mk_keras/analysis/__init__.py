"""Filter analysis: atlases, cross-model similarity, clustering; re-exports the master keys (`mk_keras.master_keys`).

A leaf package (needs scikit-learn and matplotlib): nothing in mk_keras imports it except `mk_keras.cli.filters`.
"""

from mk_keras.analysis.atlas import atlas_rows, plot_atlas
from mk_keras.analysis.clusters import ClusterResult, cluster_filters, layer_proportions, pool_filters
from mk_keras.analysis.kernels import ANALYSIS_KINDS, layer_filters, normalize_filters, random_layer_filters
from mk_keras.analysis.similarity import LayerSimilarity, compare_models, filter_similarity
from mk_keras.master_keys import (
    MASTER_KEY_NAMES,
    MASTER_KEY_PARAMS,
    SHIFTS,
    MasterKeyFit,
    MasterKeyReport,
    assign_master_keys,
    fit_master_keys,
    master_keys,
)
from mk_keras.models.layers import MasterKeyDepthwiseConv2D
from mk_keras.sources import ModelSource, load_source

__all__ = [
    "ANALYSIS_KINDS",
    "MASTER_KEY_NAMES",
    "MASTER_KEY_PARAMS",
    "SHIFTS",
    "ClusterResult",
    "LayerSimilarity",
    "MasterKeyDepthwiseConv2D",
    "MasterKeyFit",
    "MasterKeyReport",
    "ModelSource",
    "assign_master_keys",
    "atlas_rows",
    "cluster_filters",
    "compare_models",
    "filter_similarity",
    "fit_master_keys",
    "layer_filters",
    "layer_proportions",
    "load_source",
    "master_keys",
    "normalize_filters",
    "plot_atlas",
    "pool_filters",
    "random_layer_filters",
]
