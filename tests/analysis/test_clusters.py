import numpy as np
import pytest
from analysis_helpers import plant_model, planted, tiny
from sklearn.metrics import adjusted_rand_score

from mk_keras.analysis import master_keys
from mk_keras.analysis.kernels import normalize_filters
from mk_keras.analysis.clusters import cluster_filters, layer_proportions, pool_filters

pytestmark = pytest.mark.backend_agnostic

# F1 (forward dy), F5 (central dx), F6 (central dy), F8 (Gaussian): |cos| <= 0.60 once centred, as the
# clustering sees them (the published keys are close to each other: F7-F8 0.96)
PATTERNS = [0, 4, 5, 7]


def _planted(n=240, noise=0.03, seed=0):
    truth = np.random.default_rng(seed).choice(PATTERNS, n)
    filters, _, _ = planted(truth, noise=noise, seed=seed)
    return filters, truth


def _check_recovered(result, truth):
    assert adjusted_rand_score(truth, result.labels) == 1.0
    keys = normalize_filters(master_keys(7))[0]
    cos = np.abs(result.centroids.reshape(len(PATTERNS), -1) @ keys[PATTERNS].T)
    assert (cos.max(axis=1) > 0.99).all()
    assert sorted(cos.argmax(axis=1)) == [0, 1, 2, 3]


def test_kmeans_recovers_planted_types_whatever_their_scale_shift_and_sign():
    filters, truth = _planted()
    result = cluster_filters(filters, 4)
    _check_recovered(result, truth)
    assert result.share_within(0.5) == 1.0
    assert result.share_within(0.0) == 0.0
    assert np.bincount(result.labels).tolist() == sorted(np.bincount(result.labels), reverse=True)


def test_autoencoder_codes_recover_planted_types():
    filters, truth = _planted(n=160, seed=1)
    _check_recovered(cluster_filters(filters, 4, method="autoencoder", epochs=30), truth)


def test_pooled_model_filters_give_per_layer_type_proportions():
    model = tiny()
    plant_model(model, [0, 0, 1, 7], noise=0.01)
    pool = pool_filters([("m", model)])
    result = cluster_filters(pool.filters, 3)
    rows = layer_proportions(pool, result.labels, 3)
    assert [(r[1], r[2], r[3]) for r in rows] == [(0, "dw1", 16), (1, "dw2", 16), (2, "dw3", 16)]
    for r in rows:
        np.testing.assert_allclose(sorted(r[4]), [0.25, 0.25, 0.5])


@pytest.mark.parametrize("k, message", [(0, "k=0"), (-2, "k=-2"), (2.5, "k=2.5"), (500, "exceeds")])
def test_bad_k(k, message):
    filters, _ = _planted(n=20)
    with pytest.raises(ValueError, match=message):
        cluster_filters(filters, k)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_filters_and_method():
    filters, _ = _planted(n=20)
    with pytest.raises(ValueError, match="constant"):
        cluster_filters(np.concatenate([filters, np.ones((1, 7, 7))]), 2)
    with pytest.raises(ValueError, match="method='pca'"):
        cluster_filters(filters, 2, method="pca")
    with pytest.raises(ValueError, match="distinct filter types"):
        cluster_filters(np.repeat(filters[:1], 10, axis=0), 3)
    with pytest.raises(ValueError, match="different sizes"):
        pool_filters([("a", tiny()), ("b", tiny(kernel_size=3))])
