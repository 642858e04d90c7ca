"""Tests for vae_jax.distributions against independent float64 numpy/scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import test_util as jtu
from scipy import integrate, stats

from vae_jax import distributions

# Logits that stress the continuous Bernoulli: exactly 0, tiny, both sides of the Taylor
# cutoff (|t| = 1), moderate, and far beyond float32's exp overflow of the naive form (t > 88).
_CB_LOGITS = np.array(
    [-100, -60, -50, -20, -5, -1.0001, -1, -0.9999, -0.3, -1e-6, 0, 1e-6]
    + [0.3, 0.9999, 1, 1.0001, 5, 20, 50, 60, 100],
    np.float32,
)


def _softplus64(a):
    return np.logaddexp(0.0, np.asarray(a, np.float64))


def _cb_log_normalizer64(t):
    """float64 log((e^t - 1) / t) straight from the definition (accurate for |t| >= 1e-300)."""
    t = np.asarray(t, np.float64)
    safe = np.where(t == 0, 1.0, t)
    return np.where(t == 0, 0.0, np.log(np.expm1(safe) / safe))


def _cb_mean64(t):
    """float64 E[x] = 1 / (1 - e^-t) - 1 / t; only used for t = 0 or |t| >= 1e-6."""
    t = np.asarray(t, np.float64)
    safe = np.where(t == 0, 1.0, t)
    return np.where(t == 0, 0.5, 1 / -np.expm1(-safe) - 1 / safe)


def _cb_cdf64(t, x):
    """float64 CDF (e^(t x) - 1) / (e^t - 1)."""
    t = np.float64(t)
    return x if t == 0 else np.expm1(t * x) / np.expm1(t)


def _cb_log_normalizer_by_quadrature(t):
    """log of the integral of e^(t x) over [0, 1], scaled so that nothing overflows."""
    t = float(t)
    shift = max(t, 0.0)
    value, _ = integrate.quad(lambda x: np.exp(t * x - shift), 0.0, 1.0, epsabs=0, epsrel=1e-12)
    return shift + np.log(value)


class PosteriorTest(parameterized.TestCase):
    def test_num_params(self):
        self.assertEqual(distributions.posterior_num_params('diagonal', 4), 8)
        self.assertEqual(distributions.posterior_num_params('full', 4), 8 + 6)
        self.assertEqual(distributions.posterior_num_params('full', 1), 2)
        self.assertEqual(distributions.posterior_num_params('delta', 4), 4)
        with self.assertRaisesRegex(ValueError, 'diagonal'):
            distributions.posterior_num_params('spherical', 4)

    @parameterized.named_parameters(
        (f'{posterior}_{transform}_d{d}', posterior, transform, d)
        for posterior in ('diagonal', 'full')
        for transform in ('softplus', 'exp')
        for d in (1, 4)
    )
    def test_log_prob_matches_scipy(self, posterior, scale_transform, latent_dim):
        d = latent_dim
        rng = np.random.default_rng(0)
        num_params = distributions.posterior_num_params(posterior, d)
        params = rng.normal(size=(3, num_params)).astype(np.float32)  # batch of 3
        z = rng.normal(size=(3, d)).astype(np.float32)
        log_prob = jax.jit(
            lambda p, z: distributions.make_posterior(
                posterior, p, scale_transform=scale_transform
            ).log_prob(z)
        )(params, z)
        q = distributions.make_posterior(posterior, params, scale_transform=scale_transform)
        self.assertEqual(q.event_shape, (d,))
        self.assertEqual(q.batch_shape, (3,))
        transform = _softplus64 if scale_transform == 'softplus' else np.exp
        for b in range(3):  # Independent reference: build L by hand in float64.
            p = params[b].astype(np.float64)
            scale_tri = np.diag(transform(p[d : 2 * d]))
            if posterior == 'full':
                rows, cols = np.tril_indices(d, -1)
                scale_tri[rows, cols] = p[2 * d :]
            expected = stats.multivariate_normal(p[:d], scale_tri @ scale_tri.T).logpdf(z[b])
            # float32 arithmetic on values of size ~5: 1e-5 is a few ulps of slack.
            np.testing.assert_allclose(log_prob[b], expected, rtol=1e-5, atol=1e-5)

    def test_delta_posterior_is_a_point_mass_at_loc(self):
        q = distributions.make_posterior('delta', jnp.array([0.5, -2.0]))
        self.assertEqual(q.event_shape, (2,))
        np.testing.assert_array_equal(q.mean(), [0.5, -2.0])
        np.testing.assert_array_equal(q.sample(seed=jax.random.key(0), sample_shape=3)[2], q.mean())

    @parameterized.named_parameters(
        ('diagonal_odd', 'diagonal', 5, 'cannot have 5'),
        ('full_no_integer_d', 'full', 6, 'cannot have 6'),
        ('unknown_posterior', 'spherical', 4, 'diagonal'),
    )
    def test_bad_parameters_raise(self, posterior, num_params, message):
        with self.assertRaisesRegex(ValueError, message):
            distributions.make_posterior(posterior, jnp.zeros((num_params,)))

    def test_unknown_scale_transform_raises(self):
        with self.assertRaisesRegex(ValueError, 'softplus'):
            distributions.make_posterior('diagonal', jnp.zeros((4,)), scale_transform='square')

    def test_standard_normal_prior(self):
        prior = distributions.standard_normal_prior(3)
        z = np.array([0.3, -1.0, 2.0], np.float32)
        self.assertEqual(prior.event_shape, (3,))
        expected = stats.norm.logpdf(z.astype(np.float64)).sum()
        np.testing.assert_allclose(prior.log_prob(z), expected, rtol=1e-6)


class LikelihoodTest(parameterized.TestCase):
    def test_num_channels(self):
        self.assertEqual(distributions.likelihood_num_channels('bernoulli', 'per_pixel'), 1)
        self.assertEqual(distributions.likelihood_num_channels('continuous_bernoulli', 'fixed'), 1)
        self.assertEqual(distributions.likelihood_num_channels('gaussian', 'fixed'), 1)
        self.assertEqual(distributions.likelihood_num_channels('gaussian', 'learned'), 2)
        self.assertEqual(distributions.likelihood_num_channels('gaussian', 'per_pixel'), 2)
        with self.assertRaisesRegex(ValueError, 'bernoulli'):
            distributions.likelihood_num_channels('poisson', 'fixed')
        with self.assertRaisesRegex(ValueError, 'per_pixel'):
            distributions.likelihood_num_channels('gaussian', 'global')

    @parameterized.named_parameters(
        ('fixed', 'fixed'), ('learned', 'learned'), ('per_pixel', 'per_pixel')
    )
    def test_gaussian_log_prob_matches_scipy(self, gaussian_sigma):
        rng = np.random.default_rng(1)
        k, h, w, m = 2, 3, 2, 2  # data [3, 2, 2]; decoder output [K, 3, 2, C * 2]
        loc = rng.normal(size=(k, h, w, m)).astype(np.float32)
        raw = rng.normal(size=(k, h, w, m)).astype(np.float32)
        if gaussian_sigma == 'learned':  # what models.py does: one scalar, broadcast.
            raw = np.full_like(raw, -0.7)
        params = loc if gaussian_sigma == 'fixed' else np.concatenate([loc, raw], axis=-1)
        x = rng.normal(size=(h, w, m)).astype(np.float32)
        px = distributions.make_likelihood(
            'gaussian', params, event_ndims=3, gaussian_sigma=gaussian_sigma, sigma=0.3
        )
        self.assertEqual(px.batch_shape, (k,))
        self.assertEqual(px.event_shape, (h, w, m))
        log_prob = jax.jit(lambda px, x: px.log_prob(x))(px, np.broadcast_to(x, (k, h, w, m)))
        scale = 0.3 if gaussian_sigma == 'fixed' else _softplus64(raw) + 1e-3
        expected = stats.norm.logpdf(x[None], loc, scale).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(log_prob, expected, rtol=1e-5)
        np.testing.assert_array_equal(px.mean(), loc)

    @parameterized.parameters('bernoulli', 'continuous_bernoulli', 'gaussian')
    def test_log_prob_over_merged_event_axes_is_the_event_shaped_sum(self, likelihood):
        # log_prob scores on the event merged into one axis; the value must be that of the
        # per-pixel densities of the [H, W, 1] event summed, with the value broadcast over K
        # (a size-1 axis: rank promotion is an error in this code base).
        rng = np.random.default_rng(2)
        params = rng.normal(size=(4, 3, 5, 6, 1)).astype(np.float32)  # [K, B, H, W, 1]
        x = rng.uniform(size=(3, 5, 6, 1)).astype(np.float32)  # [B, H, W, 1]
        if likelihood == 'bernoulli':
            x = (x > 0.5).astype(np.float32)
        px = distributions.make_likelihood(likelihood, params, event_ndims=3, sigma=0.5)
        self.assertEqual((px.batch_shape, px.event_shape), ((4, 3), (5, 6, 1)))
        value = jax.jit(lambda px, x: px.log_prob(x))(px, x[None])
        per_pixel = px.distribution.log_prob(np.broadcast_to(x, params.shape))
        np.testing.assert_allclose(value, per_pixel.sum(axis=(2, 3, 4)), rtol=1e-5)
        self.assertEqual(px.mean().shape, params.shape)

    def test_inverse_gaussian_scale_round_trips(self):
        for sigma in (0.002, 0.1, 1.0, 30.0):
            raw = distributions.inverse_gaussian_scale(sigma)
            np.testing.assert_allclose(distributions.gaussian_scale(raw), sigma, rtol=1e-5)
        with self.assertRaisesRegex(ValueError, 'GAUSSIAN_MIN_SCALE'):
            distributions.inverse_gaussian_scale(1e-4)

    def test_bernoulli_log_prob_matches_numpy_for_extreme_logits(self):
        logits = np.linspace(-100, 100, 41).astype(np.float32)  # includes 0
        logits = np.stack([logits, logits])  # [2, 41]: x = 0 row and x = 1 row
        x = np.stack([np.zeros(41), np.ones(41)]).astype(np.float32)

        def log_prob(logits):
            px = distributions.make_likelihood('bernoulli', logits, event_ndims=1)
            return px.log_prob(x)

        value = jax.jit(log_prob)(logits)
        grad = jax.jit(jax.grad(lambda t: jnp.sum(log_prob(t))))(logits)
        t = logits.astype(np.float64)  # log sigmoid(t) = -log(1 + e^-t), stably in float64
        expected = (x * -np.logaddexp(0, -t) + (1 - x) * -np.logaddexp(0, t)).sum(axis=1)
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        self.assertTrue(np.all(np.isfinite(grad)))
        # d/dt log p = x - sigmoid(t), never the NaN of a sigmoid-then-log implementation.
        np.testing.assert_allclose(grad, x - 1 / (1 + np.exp(-t)), atol=1e-6)
        px = distributions.make_likelihood('bernoulli', logits, event_ndims=1)
        np.testing.assert_allclose(px.mean(), 1 / (1 + np.exp(-t)), atol=1e-6)

    @parameterized.named_parameters(
        ('odd_channels_per_pixel', 'gaussian', (2, 3), 1, 'per_pixel', 'odd'),
        ('event_ndims_too_large', 'bernoulli', (2, 3), 3, 'fixed', 'event_ndims'),
        ('event_ndims_zero', 'bernoulli', (2, 3), 0, 'fixed', 'event_ndims'),
        ('unknown_likelihood', 'poisson', (2, 3), 1, 'fixed', 'poisson'),
    )
    def test_bad_arguments_raise(self, likelihood, shape, event_ndims, gaussian_sigma, message):
        with self.assertRaisesRegex(ValueError, message):
            distributions.make_likelihood(
                likelihood, jnp.zeros(shape), event_ndims=event_ndims, gaussian_sigma=gaussian_sigma
            )

    def test_continuous_bernoulli_picture_is_its_mean_not_lambda(self):
        logits = np.array([[-3.0, 0.0, 2.0]], np.float32)
        px = distributions.make_likelihood('continuous_bernoulli', logits, event_ndims=1)
        np.testing.assert_allclose(px.mean(), _cb_mean64(logits), rtol=1e-6)
        self.assertGreater(abs(px.mean()[0, 2] - 1 / (1 + np.exp(-2.0))), 0.1)


class CheckSupportTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('bernoulli_grey', 'bernoulli', [0.0, 0.5, 1.0], r"'bernoulli'.*\{0, 1\}.*\[0, 1\]"),
        ('bernoulli_two', 'bernoulli', [0.0, 2.0], r'\{0, 1\}.*\[0, 2\]'),
        ('cb_above_one', 'continuous_bernoulli', [0.0, 1.5], r"'continuous_bernoulli'.*\[0, 1\]"),
        ('cb_negative', 'continuous_bernoulli', [-0.25, 1.0], r'\[-0.25, 1\]'),
        ('gaussian_nan', 'gaussian', [0.0, np.nan], 'non-finite'),
        ('unknown', 'poisson', [0.0], 'poisson'),
    )
    def test_raises(self, likelihood, data, message):
        with self.assertRaisesRegex(ValueError, message):
            distributions.check_support(likelihood, np.array(data, np.float32))

    @parameterized.named_parameters(
        ('bernoulli', 'bernoulli', [0.0, 1.0, 1.0]),
        ('cb', 'continuous_bernoulli', [0.0, 0.3, 1.0]),
        ('gaussian', 'gaussian', [-4.0, 0.3, 9.0]),
    )
    def test_accepts(self, likelihood, data):
        distributions.check_support(likelihood, np.array(data, np.float32))


class ContinuousBernoulliTest(parameterized.TestCase):
    def test_log_normalizer_matches_float64_definition_on_a_dense_grid(self):
        # Dense around the Taylor cutoff |t| = 1 and across float32's exp overflow at 88.
        t = np.concatenate(
            [np.linspace(-100, 100, 2001), np.linspace(-1.01, 1.01, 2021), [0.0, 1e-6, -1e-6]]
        ).astype(np.float32)
        got = jax.jit(distributions.cb_log_normalizer)(t)
        expected = _cb_log_normalizer64(t)
        # A(t) reaches ~95; float32 resolves it to ~1e-5 there, and to ~1e-7 near 0.
        np.testing.assert_allclose(got, expected, rtol=2e-7, atol=2e-7)

    def test_log_prob_matches_quadrature_and_the_papers_lambda_form(self):
        x = np.linspace(0, 1, 11).astype(np.float32)
        log_prob = jax.jit(
            lambda t: distributions.ContinuousBernoulli(t[:, None]).log_prob(x[None])
        )(_CB_LOGITS)
        for i, t in enumerate(_CB_LOGITS.astype(np.float64)):
            # Reference 1: normaliser by adaptive quadrature (no closed form involved).
            expected = t * x - _cb_log_normalizer_by_quadrature(t)
            np.testing.assert_allclose(log_prob[i], expected, rtol=1e-6, atol=1e-6, err_msg=t)
            if 1e-3 < abs(t) < 30:  # Reference 2: the paper's C(lambda) (lambda = 0.5 excluded).
                lam = 1 / (1 + np.exp(-t))
                log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
                expected = log_c + x * np.log(lam) + (1 - x) * np.log1p(-lam)
                np.testing.assert_allclose(log_prob[i], expected, rtol=1e-6, atol=1e-6)

    def test_density_integrates_to_one_and_moments_match_quadrature(self):
        # Our float32 density on a fine grid, integrated in float64 (Simpson); the grid is fine
        # enough for the sharpest density here (t = +-100: width 0.01 at a boundary).
        x = np.linspace(0, 1, 2**16 + 1).astype(np.float32)
        cb = distributions.ContinuousBernoulli(_CB_LOGITS[:, None])
        density = np.asarray(jnp.exp(cb.log_prob(x[None])), np.float64)
        log_density = np.asarray(cb.log_prob(x[None]), np.float64)
        xs = x.astype(np.float64)
        total = integrate.simpson(density, x=xs, axis=1)
        mean = integrate.simpson(density * xs, x=xs, axis=1)
        var = integrate.simpson(density * (xs - mean[:, None]) ** 2, x=xs, axis=1)
        entropy = integrate.simpson(-density * log_density, x=xs, axis=1)
        np.testing.assert_allclose(total, 1.0, atol=1e-5)  # float32 density: ~1e-6 relative
        np.testing.assert_allclose(cb.mean()[:, 0], mean, atol=1e-5)
        np.testing.assert_allclose(cb.variance()[:, 0], var, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(cb.entropy()[:, 0], entropy, atol=1e-4)

    def test_mean_and_variance_match_float64_closed_forms_on_a_dense_grid(self):
        t = np.concatenate([np.linspace(-100, 100, 2001), np.linspace(-1.01, 1.01, 2021)])
        t = t[(t == 0) | (np.abs(t) >= 1e-3)].astype(np.float32)
        t64 = t.astype(np.float64)
        safe = np.where(t64 == 0, 1.0, t64)
        var64 = np.where(t64 == 0, 1 / 12, 1 / safe**2 - 0.25 / np.sinh(safe / 2) ** 2)
        np.testing.assert_allclose(jax.jit(distributions.cb_mean)(t), _cb_mean64(t), atol=2e-7)
        np.testing.assert_allclose(
            jax.jit(distributions.cb_variance)(t), var64, rtol=1e-5, atol=1e-9
        )

    def test_values_and_gradients_are_finite_and_exact_for_all_logits(self):
        x = np.float32(0.3)

        def terms(t):
            cb = distributions.ContinuousBernoulli(t)
            return {
                'log_prob': cb.log_prob(x),
                'mean': cb.mean(),
                'variance': cb.variance(),
                'entropy': cb.entropy(),
                'sample': cb.sample(seed=jax.random.key(0)),
                'cdf': cb.cdf(x),
            }

        values = jax.jit(jax.vmap(terms))(_CB_LOGITS)
        grads = jax.jit(jax.vmap(jax.jacrev(terms)))(_CB_LOGITS)
        for name in values:
            self.assertTrue(np.all(np.isfinite(values[name])), name)
            self.assertTrue(np.all(np.isfinite(grads[name])), name)
        # Exponential family: d/dt log p(x) = x - E[x], and dE[x]/dt = Var[x].
        np.testing.assert_allclose(grads['log_prob'], x - _cb_mean64(_CB_LOGITS), atol=3e-7)
        np.testing.assert_allclose(grads['mean'], values['variance'], rtol=1e-4, atol=1e-8)
        np.testing.assert_array_equal(values['log_prob'][_CB_LOGITS == 0], 0.0)  # uniform

    def test_check_grads(self):
        # Both sides of the Taylor cutoff |t| = 1, and 0; a random direction covers all four.
        t = jnp.array([-2.0, -0.9, 0.0, 1.1], jnp.float32)
        x = jnp.array([0.7, 0.2, 0.5, 0.9], jnp.float32)
        log_prob = lambda t: distributions.ContinuousBernoulli(t).log_prob(x)  # noqa: E731
        # eps = 1e-2 keeps float32 finite differences accurate to ~1e-4 on these O(1) values.
        # Second derivatives: d mean / dt = variance is checked on a dense grid above.
        for fn in (log_prob, distributions.cb_mean, distributions.cb_variance):
            jtu.check_grads(jax.jit(fn), (t,), order=1, eps=1e-2, atol=1e-3, rtol=1e-3)

    def test_sampler_matches_cdf_and_mean(self):
        n = 20_000
        t = np.array([-100, -5, -0.2, -1e-6, 0, 1e-6, 1e-3, 0.7, 5, 100], np.float32)
        cb = distributions.ContinuousBernoulli(t)
        samples = np.asarray(
            jax.jit(lambda key: cb.sample(seed=key, sample_shape=n))(jax.random.key(1))
        )
        self.assertTrue(np.all((samples >= 0) & (samples <= 1)))
        mean, std = np.asarray(cb.mean()), np.sqrt(np.asarray(cb.variance()))
        # 4 standard errors: a false failure has probability < 1e-4 per logit.
        np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * std / np.sqrt(n))
        for i, ti in enumerate(t):
            ks = stats.kstest(samples[:, i], lambda s, ti=ti: _cb_cdf64(ti, s))
            self.assertGreater(ks.pvalue, 1e-3, msg=f'logit {ti}: KS {ks.statistic}')
        x = np.linspace(0, 1, 101).astype(np.float32)
        cdf = jax.jit(lambda t: distributions.ContinuousBernoulli(t[:, None]).cdf(x[None]))(t)
        for i, ti in enumerate(t):
            np.testing.assert_allclose(cdf[i], _cb_cdf64(ti, x.astype(np.float64)), atol=1e-6)

    def test_sampler_is_the_inverse_cdf_with_implicit_reparameterisation_gradients(self):
        n = 64
        # Both sides of the inverse CDF's Taylor cutoff (|t| = 0.1), 0, tiny and huge logits.
        t = np.array(
            [-100, -5, -0.2, -0.09, -1e-3, -1e-6, 0, 1e-6, 1e-3, 0.11, 0.7, 100], np.float32
        )
        key = jax.random.key(2)

        def sample(t):
            return distributions.ContinuousBernoulli(t).sample(seed=key, sample_shape=n)

        x, dx_dt = jax.jit(lambda t: jax.jvp(sample, (t,), (jnp.ones_like(t),)))(t)
        x, dx_dt = np.asarray(x, np.float64), np.asarray(dx_dt, np.float64)
        t64 = t.astype(np.float64)
        cdf = np.stack([_cb_cdf64(ti, x[:, i]) for i, ti in enumerate(t64)], axis=1)
        # Inverse CDF of the sampler's uniforms: F(x) = u (F' <= 100, x rounded to float32).
        uniforms = jax.random.uniform(key, (n,) + t.shape, jnp.float32)
        np.testing.assert_allclose(cdf, uniforms, atol=2e-5)
        # Implicit reparameterisation: dx/dt = -(dF/dt)(x) / p(x), in float64 finite differences.
        h = 1e-4
        dcdf_dt = np.stack(
            [
                (_cb_cdf64(ti + h, x[:, i]) - _cb_cdf64(ti - h, x[:, i])) / (2 * h)
                for i, ti in enumerate(t64)
            ],
            axis=1,
        )
        density = np.exp(t64 * x - _cb_log_normalizer64(t64))
        np.testing.assert_allclose(dx_dt, -dcdf_dt / density, rtol=1e-3, atol=1e-6)

    def test_kl_is_nonnegative_zero_for_equal_and_matches_quadrature(self):
        t = np.array([-100, -20, -1, -1e-6, 0, 0.5, 3, 50], np.float32)
        t1, t2 = np.meshgrid(t, t, indexing='ij')
        kl = jax.jit(
            lambda a, b: distributions.ContinuousBernoulli(a).kl_divergence(
                distributions.ContinuousBernoulli(b)
            )
        )(t1, t2)
        np.testing.assert_array_equal(np.diag(kl), 0.0)
        # KL >= 0 up to float32 rounding of terms as large as |t| ~ 100.
        self.assertTrue(np.all(np.asarray(kl) >= -1e-5 * (1 + np.abs(t1) + np.abs(t2))))
        for i, j in [(0, 7), (2, 5), (3, 4), (4, 6), (6, 1), (7, 0), (5, 2)]:
            a, b = np.float64(t[i]), np.float64(t[j])
            log_za, log_zb = (
                _cb_log_normalizer_by_quadrature(a),
                _cb_log_normalizer_by_quadrature(b),
            )
            integrand = lambda s, a=a, b=b, za=log_za, zb=log_zb: (  # noqa: E731
                np.exp(a * s - za) * ((a * s - za) - (b * s - zb))
            )
            expected, _ = integrate.quad(integrand, 0, 1, epsabs=1e-12, epsrel=1e-10, limit=200)
            np.testing.assert_allclose(kl[i, j], expected, rtol=1e-5, atol=1e-5)
        # Registered with the KL registry, so Independent likelihoods compose too.
        p1 = distributions.make_likelihood('continuous_bernoulli', t1, event_ndims=1)
        p2 = distributions.make_likelihood('continuous_bernoulli', t2, event_ndims=1)
        np.testing.assert_allclose(p1.kl_divergence(p2), np.sum(kl, axis=1), rtol=1e-6)


if __name__ == '__main__':
    absltest.main()
