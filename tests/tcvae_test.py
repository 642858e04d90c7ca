"""Tests for vae_jax.tcvae.

Aggregate posteriors with known answers: x_n ~ N(0, I) and q(z | x) = N(A x, s^2 I) give
q(z) = N(0, A A^T + s^2 I), so MI, TC and the dimension-wise KL have closed forms that the
minibatch estimators must approach for a large batch.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from vae_jax import tcvae

_N = 1_000_000  # data set size: the batch stands in for a large data set


def _gaussian_batch(seed, a_matrix, s, batch):
    """z_i ~ q(z | x_i) = N(A x_i, s^2 I), x_i ~ N(0, I); returns (z, loc, scale)."""
    r = np.random.default_rng(seed)
    d = a_matrix.shape[0]
    loc = r.normal(size=(batch, a_matrix.shape[1])) @ a_matrix.T
    z = loc + s * r.normal(size=(batch, d))
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return f32(z), f32(loc), f32(np.full((batch, d), s))


def _terms(z, loc, scale, estimator):
    return tcvae.tcvae(jnp.zeros(z.shape[:1]), z, loc, scale, dataset_size=_N, estimator=estimator)


class WeightMatrixTest(parameterized.TestCase):
    @parameterized.named_parameters(('mws', 'mws'), ('mss', 'mss'))
    def test_rows_sum_to_one(self, estimator):
        for b, n in ((2, 2), (5, 5), (7, 100)):
            w = np.exp(tcvae.log_importance_weight_matrix(b, n, estimator).astype(np.float64))
            np.testing.assert_allclose(w.sum(axis=1), np.ones(b), rtol=1e-6)

    def test_mss_matches_chen_et_al_with_the_diagonal_on_the_diagonal(self):
        n, m = 10.0, 3.0  # B = 4
        strat = (n - m) / (n * m)
        expected = np.array(
            [
                [1 / n, strat, 1 / m, 1 / m],
                [1 / m, 1 / n, strat, 1 / m],
                [1 / m, 1 / m, 1 / n, strat],
                [strat, 1 / m, 1 / m, 1 / n],
            ]
        )
        np.testing.assert_allclose(
            np.exp(tcvae.log_importance_weight_matrix(4, 10, 'mss')), expected, rtol=1e-6
        )

    @parameterized.named_parameters(
        ('estimator', 4, 10, 'iwae', 'tcvae_estimator'),
        ('batch', 1, 10, 'mws', 'at least 2'),
        ('dataset', 8, 4, 'mss', 'tcvae_dataset_size=4'),
    )
    def test_bad_arguments_raise(self, b, n, estimator, message):
        with self.assertRaisesRegex(ValueError, message):
            tcvae.log_importance_weight_matrix(b, n, estimator)


class DecompositionTest(parameterized.TestCase):
    @parameterized.named_parameters(('mws', 'mws'), ('mss', 'mss'))
    def test_q_independent_of_x_has_zero_mi_and_tc(self, estimator):
        # Every example has the same factorised q: q(z) = q(z|x) = prod_d q(z_d), so MI = TC = 0
        # and the estimators (weights summing to one) give 0 up to rounding.
        z, loc, scale = _gaussian_batch(0, np.zeros((3, 3)), 0.7, 512)
        loc = loc + jnp.asarray([0.3, -1.0, 2.0])[None]
        z = z + jnp.asarray([0.3, -1.0, 2.0])[None]
        out = _terms(z, loc, scale, estimator)
        self.assertLess(abs(float(out['mi'])), 1e-4)
        self.assertLess(abs(float(out['tc'])), 1e-4)
        kl_closed = 0.5 * np.sum(np.array([0.3, -1.0, 2.0]) ** 2 + 0.49 - 1 - np.log(0.49))
        np.testing.assert_allclose(out['dwkl'], kl_closed, atol=0.3)  # Monte Carlo, 512 draws

    @parameterized.named_parameters(('mws', 'mws'), ('mss', 'mss'))
    def test_factorised_aggregate_has_zero_tc_and_closed_form_mi(self, estimator):
        # A = I, s = 0.5: q(z) = N(0, 1.25 I), factorised. MI = D/2 log(1.25 / 0.25);
        # DWKL = D/2 (1.25 - 1 - log 1.25). Batch 2000: standard errors ~0.02.
        d, s = 2, 0.5
        z, loc, scale = _gaussian_batch(1, np.eye(d), s, 2000)
        out = jax.jit(_terms, static_argnums=3)(z, loc, scale, estimator)
        v = 1 + s**2
        self.assertLess(abs(float(out['tc'])), 0.05)
        np.testing.assert_allclose(out['mi'], d / 2 * np.log(v / s**2), atol=0.1)
        np.testing.assert_allclose(out['dwkl'], d / 2 * (v - 1 - np.log(v)), atol=0.05)

    def test_correlated_aggregate_has_closed_form_tc(self):
        # A = [[1], [1]]: q(z) = N(0, [[1+s^2, 1], [1, 1+s^2]]), correlation rho = 1 / (1+s^2),
        # TC = KL(q(z) || q(z_1) q(z_2)) = -1/2 log(1 - rho^2) = 0.511 for s = 0.5.
        s = 0.5
        z, loc, scale = _gaussian_batch(2, np.ones((2, 1)), s, 2000)
        out = _terms(z, loc, scale, 'mws')
        rho = 1 / (1 + s**2)
        np.testing.assert_allclose(out['tc'], -0.5 * np.log(1 - rho**2), atol=0.1)

    @parameterized.named_parameters(('mws', 'mws'), ('mss', 'mss'))
    def test_terms_add_up_to_the_elbo_kl_per_sample(self, estimator):
        z, loc, scale = _gaussian_batch(3, np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]]), 0.8, 16)
        scale = scale * jnp.linspace(0.5, 1.5, 16)[:, None]
        parts = tcvae.decompose(z, loc, scale, dataset_size=100, estimator=estimator)
        mi = parts['log_q_zx'] - parts['log_qz']
        tc = parts['log_qz'] - parts['log_prod_qz']
        dwkl = parts['log_prod_qz'] - parts['log_pz']
        # The ELBO's one-sample KL, computed independently with distrax.
        q = distrax.MultivariateNormalDiag(loc, scale)
        p = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
        kl = q.log_prob(z) - jax.vmap(p.log_prob)(z)
        np.testing.assert_allclose(mi + tc + dwkl, kl, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(parts['log_q_zx'], q.log_prob(z), rtol=1e-5, atol=1e-5)

    def test_loss_weights_and_unit_weights_give_the_negative_elbo(self):
        z, loc, scale = _gaussian_batch(4, np.eye(3), 0.6, 32)
        log_px = jnp.linspace(-90.0, -80.0, 32)
        jitted = jax.jit(tcvae.tcvae, static_argnames=('dataset_size', 'estimator'))
        unit = jitted(log_px, z, loc, scale, dataset_size=60_000)
        np.testing.assert_allclose(unit['loss'], -unit['elbo'], rtol=1e-6)
        np.testing.assert_allclose(unit['recon'], 85.0, rtol=1e-6)
        weighted = jitted(
            log_px, z, loc, scale, dataset_size=60_000, alpha=0.5, beta=6.0, gamma=2.0
        )
        expected = unit['recon'] + 0.5 * unit['mi'] + 6.0 * unit['tc'] + 2.0 * unit['dwkl']
        np.testing.assert_allclose(weighted['loss'], expected, rtol=1e-5)

    def test_traces_once_across_weights(self):
        traces = []

        def fn(beta):
            traces.append(None)  # runs only while tracing
            z, loc, scale = _gaussian_batch(5, np.eye(2), 0.6, 8)
            return tcvae.tcvae(jnp.zeros(8), z, loc, scale, dataset_size=100, beta=beta)['loss']

        jitted = jax.jit(fn)
        for beta in (1.0, 6.0):
            self.assertTrue(np.isfinite(jitted(beta)))
        self.assertLen(traces, 1)

    def test_gradients_are_finite(self):
        z, loc, scale = _gaussian_batch(6, np.eye(2), 0.6, 8)

        def loss(mean, sd):
            return tcvae.tcvae(jnp.zeros(8), mean + sd * z, mean, sd, dataset_size=100, beta=4.0)

        grad = jax.grad(lambda m, s: loss(m, s)['loss'], argnums=(0, 1))(loc, scale)
        self.assertTrue(all(bool(jnp.all(jnp.isfinite(g))) for g in grad))

    def test_shape_mismatch_raises(self):
        z = jnp.zeros((4, 2))
        with self.assertRaisesRegex(ValueError, r'loc \(4, 3\)'):
            tcvae.decompose(z, jnp.zeros((4, 3)), jnp.ones((4, 2)), dataset_size=10)
        with self.assertRaisesRegex(ValueError, 'log_px'):
            tcvae.tcvae(jnp.zeros(3), z, z, z + 1, dataset_size=10)


if __name__ == '__main__':
    absltest.main()
