"""Tests for vae_jax.disentanglement: each metric on representations with known answers.

The "data" are the factors themselves (observe = identity), so representations are simple maps
of the factor indices: the identity (maximum), a permutation with rescaling (still maximum),
independent noise (chance), and a 45-degree rotation of two equal-sized factors (in between:
those two factors share both dimensions, the third stays alone). Sizes are far below
disentanglement_lib's defaults so that each test takes about a second; tolerances are several
standard errors at these sizes.
"""

import jax
import numpy as np
from absl.testing import absltest, parameterized
from sklearn import metrics as sk_metrics

from vae_jax import disentanglement as dis

_SIZES = (5, 5, 6)  # factors 0 and 1 have equal ranges, so rotating them hides which is which


def _sample(key, n):
    keys = jax.random.split(key, len(_SIZES))
    return np.stack(
        [np.asarray(jax.random.randint(k, (n,), 0, s)) for k, s in zip(keys, _SIZES, strict=True)],
        -1,
    )


def _observe(factors):
    return np.asarray(factors, np.float64)


def _identity(x):
    return x


def _permuted(x):
    return x[:, [2, 0, 1]] * np.array([3.0, -0.5, 10.0]) + np.array([1.0, 2.0, -7.0])


def _rotated(x):
    return np.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1], x[:, 2]], -1)


def _noise_fn(seed=0):
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), 3))


def _score(metric, representation_fn, **settings):
    out = metric(representation_fn, _sample, _observe, jax.random.key(0), **settings)
    return out


_SMALL = {
    'beta_vae': (dis.beta_vae_score, dict(batch_size=16, num_train=400, num_eval=300)),
    'factor_vae': (
        dis.factor_vae_score,
        dict(batch_size=16, num_train=400, num_eval=300, num_variance_estimate=2000),
    ),
    'mig': (dis.mig, dict(num_train=3000)),
    'sap_continuous': (dis.sap, dict(num_train=2000, num_test=1000, continuous_factors=True)),
}


class KnownAnswersTest(parameterized.TestCase):
    @parameterized.product(metric=tuple(_SMALL), rep=('identity', 'permuted'))
    def test_factors_themselves_score_the_maximum(self, metric, rep):
        fn, settings = _SMALL[metric]
        score = _score(fn, {'identity': _identity, 'permuted': _permuted}[rep], **settings)
        # MIG's plug-in MI is biased up for the runner-up dimension, ~(20-1)(6-1)/(2*3000) nats.
        self.assertGreater(score, 0.97 if metric == 'mig' else 0.995)

    @parameterized.named_parameters(
        # Classifier accuracies: chance is 1/3 (three factors); sd about sqrt(2/9 / 300) = 0.03.
        ('beta_vae', 'beta_vae', 1 / 3, 0.1),
        ('factor_vae', 'factor_vae', 1 / 3, 0.1),
        # Plug-in MI of independent variables is ~ (20-1)(5-1)/(2*3000) nats = 0.013, and the
        # gap between the two largest of three such estimates is smaller still.
        ('mig', 'mig', 0.0, 0.03),
        ('sap_continuous', 'sap_continuous', 0.0, 0.01),
    )
    def test_noise_scores_at_chance(self, metric, chance, tolerance):
        fn, settings = _SMALL[metric]
        self.assertAlmostEqual(_score(fn, _noise_fn(), **settings), chance, delta=tolerance)

    @parameterized.named_parameters(
        # The rotation leaves factor 2 alone and makes factors 0 and 1 indistinguishable: a
        # classifier that names the fixed factor gets 2 and half of 0/1: about 2/3.
        ('beta_vae', 'beta_vae', 0.5, 0.85),
        ('factor_vae', 'factor_vae', 0.5, 0.85),
        # Factors 0 and 1 are each spread over two dimensions: their gaps are small, factor 2's
        # is about 1, so MIG is a little above 1/3.
        ('mig', 'mig', 0.3, 0.6),
        # Both rotated dimensions correlate with factor 0 (and 1) equally, so their gap is 0.
        ('sap_continuous', 'sap_continuous', 0.3, 0.4),
    )
    def test_mixing_two_factors_scores_in_between(self, metric, low, high):
        fn, settings = _SMALL[metric]
        score = _score(fn, _rotated, **settings)
        self.assertBetween(score, low, high)

    def test_sap_discrete_identity_and_noise(self):
        settings = dict(num_train=1000, num_test=1000)
        identity = _score(dis.sap, _identity, **settings)
        noise = _score(dis.sap, _noise_fn(), **settings)
        # The best code of each factor beats every other code by far more than chance (1/5 or
        # 1/6 accuracy for the runner-up); noise codes are all at chance.
        self.assertGreater(identity, 0.3)
        self.assertLess(noise, 0.05)

    def test_same_key_same_number(self):
        fn, settings = _SMALL['factor_vae']
        a = _score(fn, _rotated, **settings)
        b = _score(fn, _rotated, **settings)
        self.assertEqual(a, b)


class MigTest(absltest.TestCase):
    def test_hand_computed_small_example(self):
        # One factor v and two codes, 6 draws, 2 bins per code (a code's two values -> bins 1, 2):
        # H(v) = log 2. z0: z0=0 holds v=0,0; z0=1 holds v=0,1,1,1, so
        #   I(z0; v) = log 2 - 2/3 H(1/4, 3/4).
        # z1: each value holds one v and two of the other, so I(z1; v) = log 2 - H(1/3, 2/3).
        v = np.array([0, 0, 0, 1, 1, 1])
        codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 0], [1, 1]], np.float64)

        def h(*p):
            return -sum(q * np.log(q) for q in p)

        i0 = np.log(2) - 2 / 3 * h(1 / 4, 3 / 4)
        i1 = np.log(2) - h(1 / 3, 2 / 3)
        expected = (i0 - i1) / np.log(2)
        self.assertAlmostEqual(expected, 0.377444, places=5)
        got = dis.mig_from_samples(codes, v[:, None], num_bins=2)
        self.assertAlmostEqual(got, expected, places=12)

    def test_mutual_information_matches_sklearn(self):
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 7, 500), rng.integers(0, 4, 500)
        b = np.where(rng.random(500) < 0.5, a % 4, b)
        self.assertAlmostEqual(
            dis.mutual_information(a, b), sk_metrics.mutual_info_score(a, b), places=12
        )

    def test_discretize_puts_the_maximum_in_the_last_bin(self):
        binned = dis.discretize(np.array([[0.0], [0.5], [1.0], [0.26]]), num_bins=4)
        np.testing.assert_array_equal(binned[:, 0], [1, 3, 4, 2])

    def test_constant_factors_are_left_out(self):
        factors = np.stack([np.arange(100) % 4, np.zeros(100, int)], -1)
        codes = factors[:, :1].astype(float)
        self.assertAlmostEqual(dis.mig_from_samples(codes, factors), 1.0)


class DciTest(parameterized.TestCase):
    def test_permutation_importance_scores_one(self):
        d, c = dis.dci_from_importance(np.eye(3)[[2, 0, 1]] * [[1.0], [2.0], [3.0]])
        self.assertAlmostEqual(d, 1.0)
        self.assertAlmostEqual(c, 1.0)

    def test_closed_form_for_a_block_matrix(self):
        # Codes 0, 1 each split evenly between factors 0, 1 (entropy log 2 / log 3 in base 3);
        # code 2 is factor 2's alone. Row weights 2a, 2a, b over 4a + b.
        a, b = 1 / np.sqrt(2), 1.0
        importance = np.array([[a, a, 0], [a, a, 0], [0, 0, b]])
        expected = (4 * a * (1 - np.log(2) / np.log(3)) + b) / (4 * a + b)
        d, c = dis.dci_from_importance(importance)
        self.assertAlmostEqual(d, expected, places=12)
        self.assertAlmostEqual(c, expected, places=12)  # symmetric matrix

    def test_one_code_for_all_factors_is_complete_but_not_disentangled(self):
        d, c = dis.dci_from_importance(np.array([[1.0, 1.0, 1.0], [0, 0, 0], [0, 0, 0]]))
        self.assertAlmostEqual(d, 0.0)
        self.assertAlmostEqual(c, 1.0)

    def test_lasso_importance_on_a_linear_case(self):
        # Standardised codes z = (f0 + f1, f0 - f1, f2) with equal factor variances: the
        # regression of standardised f0 on them has weights 1/sqrt(2), 1/sqrt(2), 0, and f2's
        # is (0, 0, 1); Lasso (alpha 0.01) shrinks each by about alpha.
        out = _score(dis.dci, _rotated, num_train=3000, num_test=1000, regressor='lasso')
        a = 1 / np.sqrt(2)
        np.testing.assert_allclose(out['importance'], [[a, a, 0], [a, a, 0], [0, 0, 1]], atol=0.04)
        expected = dis.dci_from_importance(np.array([[a, a, 0], [a, a, 0], [0, 0, 1]]))
        self.assertAlmostEqual(out['disentanglement'], expected[0], delta=0.03)
        self.assertGreater(out['informativeness'], 0.97)

    @parameterized.named_parameters(
        ('identity', _identity, 0.95, 1.0), ('rotated', _rotated, 0.2, 0.8)
    )
    def test_gbt(self, rep, low, high):
        out = _score(dis.dci, rep, num_train=600, num_test=300)
        self.assertBetween(out['disentanglement'], low, high)
        self.assertGreater(out['informativeness'], 0.95)

    def test_noise_is_neither_disentangled_nor_informative(self):
        out = _score(dis.dci, _noise_fn(), num_train=2000, num_test=1000, regressor='lasso')
        self.assertLess(out['informativeness'], 0.02)

    def test_unknown_regressor(self):
        with self.assertRaisesRegex(ValueError, "regressor='forest'"):
            _score(dis.dci, _identity, regressor='forest')


if __name__ == '__main__':
    absltest.main()
