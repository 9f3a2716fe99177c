import numpy as np
import pytest
from analysis_helpers import plant_model, planted, tiny, tiny_conv

from mk_keras.analysis.similarity import compare_models, filter_similarity

pytestmark = pytest.mark.backend_agnostic


def test_filter_similarity_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3, 3)), rng.standard_normal((7, 3, 3))

    def unit(f):
        f = f.ravel() - f.mean()
        return f / np.linalg.norm(f)

    expected = np.mean([max(abs(unit(x) @ unit(y)) for y in b) for x in a])
    assert filter_similarity(a, b) == pytest.approx(expected, abs=1e-12)


def test_filter_similarity_ignores_scale_shift_and_sign():
    filters, _, _ = planted(np.arange(8), seed=1)
    assert filter_similarity(filters, -3 * filters[::-1] + 2) == pytest.approx(1, abs=1e-9)
    assert np.isnan(filter_similarity(np.ones((2, 3, 3)), filters))


def test_model_compared_with_itself_scores_one_even_when_sampled():
    model = tiny()
    for max_filters in (1024, 5):
        rows = compare_models(model, model, max_filters=max_filters)
        assert [r.layer_a for r in rows] == ["dw1", "dw2", "dw3"]
        assert [r.filters_a for r in rows] == [min(16, max_filters)] * 3
        np.testing.assert_allclose([r.similarity for r in rows], 1, atol=1e-6)
        assert all(r.baseline < 0.7 for r in rows)


def test_random_models_score_near_the_random_baseline():
    rows = compare_models(tiny(channels=64), tiny(channels=64), seed=3)
    for r in rows:
        assert abs(r.similarity - r.baseline) < 0.05, r


def test_models_sharing_key_types_score_far_above_baseline():
    a, b = tiny(), tiny()
    plant_model(a, [0, 1, 7, 3], noise=0.02, seed=0)
    plant_model(b, [7, 3, 1, 0], noise=0.02, seed=10)
    for r in compare_models(a, b):
        assert r.similarity > 0.95 and r.baseline < 0.6, r


def test_regular_conv_slices_of_a_model_compared_with_itself():
    model = tiny_conv()
    rows = compare_models(model, model, kind="conv")
    assert [r.filters_a for r in rows] == [3 * 16, 16 * 16, 16 * 16]
    np.testing.assert_allclose([r.similarity for r in rows], 1, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no depthwise layers"):
        compare_models(tiny_conv(), tiny_conv())
    with pytest.raises(ValueError, match="same kernel sizes"):
        compare_models(tiny(), tiny(kernel_size=3))
    with pytest.raises(ValueError, match="max_filters=0"):
        compare_models(tiny(), tiny(), max_filters=0)
    with pytest.raises(ValueError, match="kind='pointwise'"):
        compare_models(tiny(), tiny(), kind="pointwise")
