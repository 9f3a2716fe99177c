"""mk-filters: filter atlas, cross-model similarity and filter clustering.

Usage:
  mk-filters atlas MODEL [MODEL ...] --out_dir=DIR [--per_layer=32] [--per_row=8]
  mk-filters compare MODEL_A MODEL_B --out_dir=DIR [--kind=conv] [--max_filters=1024]
  mk-filters cluster MODEL [MODEL ...] --out_dir=DIR [--k=8] [--method=autoencoder] [--max_distance=0.5]

MODEL: a run directory with model.keras, a .keras file, keras:<Application> (random init) or a registry name
(random init). Outputs go to --out_dir; existing ones are kept unless --overwrite. --flagfile works; --backend
switches Keras (the analysis runs on TensorFlow or JAX). Errors: one line on stderr, exit status 2.
"""

import json
import os
import sys

import keras
from absl import flags

from mk_keras.analysis import ANALYSIS_KINDS
from mk_keras.analysis.atlas import atlas_rows, plot_atlas, write_atlas_csv
from mk_keras.analysis.clusters import (
    CLUSTER_METHODS,
    centroid_summary,
    cluster_filters,
    layer_proportions,
    plot_centroids,
    plot_proportions,
    pool_filters,
    write_proportions_csv,
)
from mk_keras.analysis.similarity import compare_models, plot_similarity, write_similarity_csv
from mk_keras.cli import common
from mk_keras.sources import load_source

PROG = "mk-filters"

COMMANDS = ("atlas", "compare", "cluster")
OUTPUTS = {
    "atlas": {"atlas": "atlas_{kind}.png", "csv": "atlas_{kind}.csv"},
    "compare": {"csv": "similarity_{kind}.csv", "plot": "similarity_{kind}.png"},
    "cluster": {
        "centroids": "clusters_{kind}_centroids.png",
        "proportions_plot": "clusters_{kind}_proportions.png",
        "proportions_csv": "clusters_{kind}_proportions.csv",
        "summary": "clusters_{kind}_summary.json",
    },
}


def define_flags(flag_values):
    """Define the mk-filters flags on the `flags.FlagValues` `flag_values`."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_enum("backend", None, common.BACKENDS, "Keras backend (default: KERAS_BACKEND).", **fv)
    flags.DEFINE_string("out_dir", None, "Folder for the outputs (created if missing).", **fv)
    flags.DEFINE_boolean("overwrite", False, "Replace existing output files.", **fv)
    flags.DEFINE_enum("kind", "depthwise", ANALYSIS_KINDS, "depthwise filters, or the 2-D slices of conv kernels.",
                      **fv)
    flags.DEFINE_integer("seed", 0, "Seed for sampling, the random baseline and clustering.", **fv)
    flags.DEFINE_integer("per_layer", 32, "atlas: filters drawn per layer.", lower_bound=1, **fv)
    flags.DEFINE_integer("per_row", 8, "atlas: filter tiles per row of a layer's block.", lower_bound=1, **fv)
    flags.DEFINE_integer("max_filters", 1024, "compare, cluster: at most this many filters per layer (sampled).",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("k", 8, "cluster: number of filter types.", **fv)
    flags.DEFINE_enum("method", "kmeans", CLUSTER_METHODS, "cluster: sign-invariant k-means, or autoencoder codes.",
                      **fv)
    flags.DEFINE_float("max_distance", 0.5, "cluster: report the share of filters this close to their centroid.", **fv)
    flags.DEFINE_integer("latent_dim", 8, "cluster --method=autoencoder: code size.", lower_bound=1, **fv)
    flags.DEFINE_integer("epochs", 50, "cluster --method=autoencoder: training epochs.", lower_bound=1,
                         **fv)


def _output_paths(command, out_dir, kind, overwrite):
    if not out_dir:
        raise ValueError("--out_dir is required")
    paths = {name: os.path.join(out_dir, pattern.format(kind=kind)) for name, pattern in OUTPUTS[command].items()}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(f"output {existing[0]!r} exists; pass --overwrite to replace it")
    os.makedirs(out_dir, exist_ok=True)
    return paths


def run(
    command,
    models,
    out_dir,
    kind="depthwise",
    seed=0,
    overwrite=False,
    per_layer=32,
    per_row=8,
    max_filters=1024,
    k=8,
    method="kmeans",
    max_distance=0.5,
    latent_dim=8,
    epochs=50,
):
    """Run one subcommand on model specs (see `mk_keras.sources.load_source`); returns {output: path}."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
    if not models:
        raise ValueError(f"{command} needs at least one model")
    if command == "compare" and len(models) != 2:
        raise ValueError(f"compare needs exactly two models, got {len(models)}")
    if command == "cluster" and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise ValueError(f"k={k!r} must be a positive integer")
    if command == "atlas":
        for name, value in (("per_layer", per_layer), ("per_row", per_row)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
    if not 0 <= max_distance <= 2:
        raise ValueError(f"max_distance={max_distance!r} must be in [0, 2] (distance between unit vectors)")
    paths = _output_paths(command, out_dir, kind, overwrite)
    keras.utils.set_random_seed(seed)  # random-init models (registry and keras: names) are reproducible
    sources = [load_source(spec) for spec in models]
    loaded = [(src.label, src.model) for src in sources]
    if command == "atlas":
        blocks = atlas_rows(loaded, per_layer, per_row, kind, seed)
        title = f"{kind} filters of the first, middle and last layers, {per_layer} drawn per layer (seed {seed})"
        plot_atlas(blocks, paths["atlas"], title, [src.describe() for src in sources])
        write_atlas_csv(blocks, paths["csv"])
    elif command == "compare":
        (label_a, model_a), (label_b, model_b) = loaded
        rows = compare_models(model_a, model_b, kind, max_filters, seed)
        write_similarity_csv(rows, paths["csv"])
        plot_similarity(rows, label_a, label_b, kind, paths["plot"])
        for r in rows:
            print(f"[{r.index:3d}] {r.layer_a:<28} similarity {r.similarity:.3f}  random baseline {r.baseline:.3f}")
    else:
        pool = pool_filters(loaded, kind, max_filters, seed)
        result = cluster_filters(pool.filters, k, method, seed, latent_dim, epochs)
        proportions = layer_proportions(pool, result.labels, k)
        write_proportions_csv(proportions, k, paths["proportions_csv"])
        plot_proportions(proportions, k, paths["proportions_plot"])
        plot_centroids(result, max_distance, paths["centroids"])
        summary = {"models": [label for label, _ in loaded], "kind": kind, "method": method, "seed": seed,
                   **centroid_summary(result, max_distance)}
        with open(paths["summary"], "w") as f:
            json.dump(summary, f, indent=2)
        print(f"{summary['filters']} filters, {k} types, {100 * summary['share_within']:.1f}% within {max_distance:g}")
    for path in paths.values():
        print(f"wrote {path}")
    return paths


def main(argv):
    """Parse `argv` ([program, command, model, ...] plus flags) into fresh flags and run; returns the exit status."""
    parsed = common.parse_flags(PROG, define_flags, argv, positional=True, usage=__doc__)
    if isinstance(parsed, int):
        return parsed
    fv, args = parsed
    try:
        if fv.backend and fv.backend != keras.backend.backend():
            raise ValueError(f"--backend={fv.backend} but Keras runs {keras.backend.backend()!r}; set "
                             f"KERAS_BACKEND={fv.backend} or use the {PROG} console script")
        if not args:
            raise ValueError(f"missing command; usage: {PROG} {{{'|'.join(COMMANDS)}}} MODEL [MODEL ...] --out_dir=DIR")
        run(
            args[0],
            args[1:],
            fv.out_dir,
            kind=fv.kind,
            seed=fv.seed,
            overwrite=fv.overwrite,
            per_layer=fv.per_layer,
            per_row=fv.per_row,
            max_filters=fv.max_filters,
            k=fv.k,
            method=fv.method,
            max_distance=fv.max_distance,
            latent_dim=fv.latent_dim,
            epochs=fv.epochs,
        )
    except (ValueError, FileNotFoundError) as e:
        return common.fail(PROG, " ".join(str(e).split()))
    return common.EXIT_OK


def main_entry():
    """Console script `mk-filters`."""
    common.select_backend(sys.argv, "mk_keras.cli.filters")
    common.setup_logging()
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    main_entry()
