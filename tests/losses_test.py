"""Tests for vae_jax.losses.

Reference model: probabilistic PCA, z ~ N(0, I_D), x | z ~ N(W z + b, s^2 I_M). Its evidence
log p(x) = log N(x; b, W W^T + s^2 I) and its posterior (a full-covariance Gaussian) are exact,
so bounds and gradient estimators can be checked against known answers, not against themselves.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import test_util as jtu
from scipy import stats

from vae_jax import distributions, losses

_D, _M, _SIGMA = 2, 3, 0.5
_RNG = np.random.default_rng(0)
_W = _RNG.normal(size=(_M, _D))
_B = _RNG.normal(size=_M)
_X = _RNG.normal(size=_M).astype(np.float32)
_LOG_EVIDENCE = stats.multivariate_normal(_B, _W @ _W.T + _SIGMA**2 * np.eye(_M)).logpdf(_X)
_POST_COV = np.linalg.inv(np.eye(_D) + _W.T @ _W / _SIGMA**2)
_POST_MEAN = _POST_COV @ _W.T @ (_X - _B) / _SIGMA**2
_THETA = {'W': jnp.asarray(_W, jnp.float32), 'b': jnp.asarray(_B, jnp.float32)}
_NUM_KEYS = 2000  # Monte-Carlo tests: standard errors ~ 1/45 of a standard deviation.


def _full_params(mean, scale_tri):
    """make_posterior('full', .) parameters (softplus) for a given mean and Cholesky factor."""
    rows, cols = np.tril_indices(len(mean), -1)
    raw_diag = np.log(np.expm1(np.diag(scale_tri)))  # softplus^-1
    return jnp.asarray(np.concatenate([mean, raw_diag, scale_tri[rows, cols]]), jnp.float32)


_PHI_EXACT = _full_params(_POST_MEAN, np.linalg.cholesky(_POST_COV))
# A deliberately wrong q: mean off by half a posterior sd, too narrow, no correlation.
_POST_SD = np.sqrt(np.diag(_POST_COV))
_PHI_WRONG = _full_params(_POST_MEAN + 0.5 * _POST_SD, np.diag(0.6 * _POST_SD))
_KL_WRONG = 0.5 * np.sum(  # KL(q_wrong || N(0, I)), closed form
    (_POST_MEAN + 0.5 * _POST_SD) ** 2 + (0.6 * _POST_SD) ** 2 - 1 - np.log((0.6 * _POST_SD) ** 2)
)


def _diag_params(mean, sd):
    """make_posterior('diagonal', .) parameters (softplus) for a given mean and scale."""
    return jnp.asarray(np.concatenate([mean, np.log(np.expm1(sd))]), jnp.float32)


# A second pPCA whose exact posterior is diagonal (W has orthogonal columns, so W^T W is diagonal):
# the diagonal family, every config's default, gets the same exact-posterior checks as the full one.
_W_ORTH = np.linalg.qr(_W)[0] * np.array([1.5, 0.7])  # [M, D], orthogonal columns
_POST_VAR_ORTH = 1.0 / (1.0 + np.sum(_W_ORTH**2, axis=0) / _SIGMA**2)  # [D]
_POST_MEAN_ORTH = _POST_VAR_ORTH * (_W_ORTH.T @ (_X - _B)) / _SIGMA**2
_POST_SD_ORTH = np.sqrt(_POST_VAR_ORTH)
# Per family: the posterior, the decoder weights and encoder parameters: exact, wrong (far off),
# near (mean off by 0.2 sd, scale 0.8x).
_FAMILIES = {
    'full': dict(
        posterior='full',
        theta=_THETA,
        phi_exact=_PHI_EXACT,
        phi_wrong=_PHI_WRONG,
        phi_near=_full_params(_POST_MEAN + 0.2 * _POST_SD, 0.8 * np.linalg.cholesky(_POST_COV)),
    ),
    'diagonal': dict(
        posterior='diagonal',
        theta={'W': jnp.asarray(_W_ORTH, jnp.float32), 'b': _THETA['b']},
        phi_exact=_diag_params(_POST_MEAN_ORTH, _POST_SD_ORTH),
        phi_wrong=_diag_params(_POST_MEAN_ORTH + 0.5 * _POST_SD_ORTH, 0.6 * _POST_SD_ORTH),
        phi_near=_diag_params(_POST_MEAN_ORTH + 0.2 * _POST_SD_ORTH, 0.8 * _POST_SD_ORTH),
    ),
}
_FAMILY_NAMES = tuple(_FAMILIES)


def _encode(phi, posterior='full'):
    return lambda x: distributions.make_posterior(posterior, phi)


def _decode(theta):
    def decode(z):  # z [K, D] -> batch [K], event [M]
        loc = z @ theta['W'].T + theta['b'][None]
        return distributions.make_likelihood('gaussian', loc, event_ndims=1, sigma=_SIGMA)

    return decode


def _ppca(objective, phi=_PHI_WRONG, theta=None, **kwargs):
    """objective(key) on the PPCA example with encoder parameters phi."""
    theta = _THETA if theta is None else theta
    return lambda key: objective(key, jnp.asarray(_X), _encode(phi), _decode(theta), **kwargs)


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _mean_and_se(samples):
    samples = np.asarray(samples, np.float64)
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))


@functools.cache
def _estimator_grads(k_samples, family='full'):
    """jit(vmap over keys) of d loss / d (phi, theta) for all three estimators; beta traced.

    Call it with _NUM_KEYS keys only, so each (K, family) compiles once for all the tests that
    use it. `family` picks the posterior and its pPCA (see _FAMILIES).
    """
    posterior, theta = _FAMILIES[family]['posterior'], _FAMILIES[family]['theta']

    def one_key(key, phi, beta):
        def loss(params, estimator):
            terms = losses.iwae(
                key,
                jnp.asarray(_X),
                _encode(params['phi'], posterior),
                _decode(params['theta']),
                beta=beta,
                k_samples=k_samples,
                estimator=estimator,
            )
            return terms['loss']

        params = {'phi': phi, 'theta': theta}
        return {e: jax.grad(loss)(params, e) for e in losses.ESTIMATORS}

    return jax.jit(jax.vmap(one_key, in_axes=(0, None, None)))


def _family_cases(*cases):
    """named_parameters rows: every case crossed with every posterior family."""
    return [
        (f'{family}_{case[0]}', family, *case[1:]) for family in _FAMILY_NAMES for case in cases
    ]


# A tiny Bernoulli image model with any latent size, for shape grids and gradient checks.
_IMAGE = np.array([[[1.0], [0.0], [1.0]], [[0.0], [0.0], [1.0]]], np.float32)  # [2, 3, 1]


def _image_params(latent_dim, posterior, seed=0):
    rng = np.random.default_rng(seed)
    num_params = distributions.posterior_num_params(posterior, latent_dim)
    return {
        'enc': jnp.asarray(0.3 * rng.normal(size=(_IMAGE.size, num_params)), jnp.float32),
        'dec': jnp.asarray(0.5 * rng.normal(size=(latent_dim, _IMAGE.size)), jnp.float32),
    }


def _image_encode(params, posterior):
    return lambda x: distributions.make_posterior(posterior, x.reshape(-1) @ params['enc'])


def _image_decode(params):
    def decode(z):  # z [..., D] -> logits [..., 2, 3, 1]
        logits = (z @ params['dec']).reshape(z.shape[:-1] + _IMAGE.shape)
        return distributions.make_likelihood('bernoulli', logits, event_ndims=3)

    return decode


class LossesTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # Mixed-precision slips (a float64 constant, an int) fail loudly here.
        self.enter_context(jax.numpy_dtype_promotion('strict'))

    # --- Bounds against the exact evidence of the linear-Gaussian model. -------------------

    @parameterized.named_parameters(
        ('elbo_k1', losses.elbo, 'elbo', dict(k_samples=1, analytic_kl=False)),
        ('elbo_k5', losses.elbo, 'elbo', dict(k_samples=5, analytic_kl=False, kl_samples=5)),
        ('iwae_k1_reparam', losses.iwae, 'bound', dict(k_samples=1)),
        ('iwae_k5_stl', losses.iwae, 'bound', dict(k_samples=5, estimator='stl')),
        ('iwae_k50_dreg', losses.iwae, 'bound', dict(k_samples=50, estimator='dreg')),
        ('iwae_k50_elbo_entry', losses.iwae, 'elbo', dict(k_samples=50)),
    )
    def test_exact_posterior_gives_the_log_evidence_for_every_sample(self, objective, key, kw):
        out = jax.jit(jax.vmap(_ppca(objective, _PHI_EXACT, **kw)))(_keys(64))
        # With q = p(z|x), log w = log p(x) for every z. Tolerance: float32 sums of terms ~10.
        np.testing.assert_allclose(out[key], _LOG_EVIDENCE, atol=1e-4)
        np.testing.assert_allclose(-out['loss'], _LOG_EVIDENCE, atol=1e-4)

    def test_analytic_kl_elbo_is_unbiased_at_the_exact_posterior(self):
        out = jax.jit(jax.vmap(_ppca(losses.elbo, _PHI_EXACT)))(_keys(_NUM_KEYS))
        kl_closed_form = 0.5 * (
            np.trace(_POST_COV) + _POST_MEAN @ _POST_MEAN - _D - np.linalg.slogdet(_POST_COV)[1]
        )
        np.testing.assert_allclose(out['kl'], kl_closed_form, rtol=1e-5)
        mean, se = _mean_and_se(out['elbo'])
        self.assertLess(abs(mean - _LOG_EVIDENCE), 4 * se)  # 4 standard errors
        self.assertGreater(np.std(out['elbo']), 0.1)  # analytic KL: recon still varies with z

    def test_iwae_bound_rises_with_k_and_stays_below_the_log_evidence(self):
        stats_by_k = {}
        for k in (1, 5, 50):
            bound = jax.jit(jax.vmap(_ppca(losses.iwae, k_samples=k)))(_keys(_NUM_KEYS, k))
            stats_by_k[k] = _mean_and_se(bound['bound'])
        for small, large in ((1, 5), (5, 50)):
            (m_small, se_small), (m_large, se_large) = stats_by_k[small], stats_by_k[large]
            self.assertGreater(m_large - m_small, 4 * np.hypot(se_small, se_large), (small, large))
        m50, se50 = stats_by_k[50]
        self.assertGreater(_LOG_EVIDENCE - m50, 4 * se50)  # the wrong q leaves a visible gap

    @parameterized.named_parameters((estimator, estimator) for estimator in losses.ESTIMATORS)
    def test_iwae_with_one_sample_is_the_one_sample_monte_carlo_elbo(self, estimator):
        def both(key, beta):
            iwae = _ppca(losses.iwae, beta=beta, estimator=estimator)(key)
            elbo = _ppca(losses.elbo, beta=beta, analytic_kl=False)(jax.random.clone(key))
            return iwae, elbo

        both = jax.jit(jax.vmap(both, in_axes=(0, None)))
        for beta in (1.0, 0.3):
            iwae, elbo = both(_keys(16), jnp.float32(beta))
            for name in ('loss', 'recon', 'kl', 'elbo'):  # same z, same sums: float32 rounding
                np.testing.assert_allclose(iwae[name], elbo[name], rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(iwae['bound'], elbo['elbo'], rtol=1e-6, atol=1e-5)

    def test_iwae_terms_are_the_k_sample_elbo_terms_and_the_bound_is_above(self):
        def both(key):
            iwae = _ppca(losses.iwae, k_samples=5)(key)
            elbo = _ppca(losses.elbo, k_samples=5, analytic_kl=False, kl_samples=5)(
                jax.random.clone(key)
            )
            return iwae, elbo

        iwae, elbo = jax.jit(jax.vmap(both))(_keys(16))
        for name in ('recon', 'kl', 'elbo'):  # same 5 draws: mean_k of the same terms
            np.testing.assert_allclose(iwae[name], elbo[name], rtol=1e-6, atol=1e-5)
        # log-mean-exp >= mean (Jensen), for every draw, strictly for a wrong q.
        self.assertTrue(np.all(iwae['bound'] > iwae['elbo']))

    def test_monte_carlo_kl_is_unbiased(self):
        out = jax.jit(jax.vmap(_ppca(losses.elbo, analytic_kl=False, kl_samples=3)))(
            _keys(_NUM_KEYS)
        )
        mean, se = _mean_and_se(out['kl'])
        self.assertLess(abs(mean - _KL_WRONG), 4 * se)
        self.assertGreater(se, 0)

    # --- Gradient estimators. ---------------------------------------------------------------

    @parameterized.named_parameters(_family_cases(('k1', 1), ('k5', 5)))
    def test_decoder_gradients_are_the_same_for_every_estimator(self, family, k):
        phi = _FAMILIES[family]['phi_wrong']
        grads = _estimator_grads(k, family)(_keys(_NUM_KEYS), phi, 1.0)
        for estimator in ('stl', 'dreg'):
            for name in ('W', 'b'):
                np.testing.assert_allclose(
                    grads[estimator]['theta'][name],
                    grads['reparam']['theta'][name],
                    rtol=1e-5,
                    atol=1e-5,  # float32 re-association of the same sum
                )

    @parameterized.named_parameters(
        _family_cases(
            ('stl_k1', 'stl', 1, 1.0, True),
            ('dreg_k1', 'dreg', 1, 1.0, True),
            ('dreg_k5', 'dreg', 5, 1.0, True),
            ('dreg_k5_beta_half', 'dreg', 5, 0.5, True),
            ('stl_k5_is_biased', 'stl', 5, 1.0, False),
            ('stl_k5_beta_half_is_biased', 'stl', 5, 0.5, False),
        )
    )
    def test_encoder_gradient_expectation(self, family, estimator, k, beta, unbiased):
        phi = _FAMILIES[family]['phi_wrong']
        grads = _estimator_grads(k, family)(_keys(_NUM_KEYS), phi, beta)
        # Paired differences (same z for the same key) against the plain estimator, for every
        # variational parameter: loc and scale alike.
        diff = grads[estimator]['phi'] - grads['reparam']['phi']  # [N, P]
        mean, se = _mean_and_se(diff)
        z_scores = np.abs(mean) / se
        if unbiased:  # 4.5 sd over <= 5 components: a false failure has probability < 1e-4.
            self.assertLess(z_scores.max(), 4.5, z_scores)
        else:  # STL drops a score term with nonzero mean for K > 1: far beyond noise here.
            self.assertGreater(z_scores.max(), 8.0, z_scores)

    @parameterized.named_parameters(_family_cases(('k1', 1), ('k5', 5)))
    def test_dreg_encoder_gradient_has_lower_variance_than_reparam(self, family, k):
        # Near the posterior the score term that DReG drops is mostly noise. (Far from it, as
        # with phi_wrong, it can act as a control variate and DReG is noisier: measured here.)
        phi = _FAMILIES[family]['phi_near']
        grads = _estimator_grads(k, family)(_keys(_NUM_KEYS), phi, 1.0)
        var_dreg = np.var(grads['dreg']['phi'], axis=0)
        var_reparam = np.var(grads['reparam']['phi'], axis=0)
        # Measured ratios: 0.32-0.36 at K = 1, 0.06-0.16 at K = 5, for loc and scale alike.
        np.testing.assert_array_less(var_dreg, 0.5 * var_reparam)

    @parameterized.named_parameters(_family_cases(('k1', 1), ('k5', 5)))
    def test_stl_and_dreg_encoder_gradients_vanish_at_the_exact_posterior(self, family, k):
        phi = _FAMILIES[family]['phi_exact']
        grads = _estimator_grads(k, family)(_keys(_NUM_KEYS), phi, 1.0)
        reparam_var = np.var(grads['reparam']['phi'], axis=0)
        # The plain estimator is noisy in EVERY parameter (loc and scale), so a leak shows.
        self.assertGreater(reparam_var.min(), 1e-2, reparam_var)
        for estimator in ('stl', 'dreg'):
            # log w is constant in z, so these are zero up to float32 rounding, for every
            # sample and every variational parameter (loc and scale alike).
            np.testing.assert_array_less(np.abs(grads[estimator]['phi']), 1e-5, estimator)

    @parameterized.named_parameters((family, family) for family in _FAMILY_NAMES)
    def test_stop_gradient_stops_every_variational_parameter(self, family):
        posterior, phi = _FAMILIES[family]['posterior'], _FAMILIES[family]['phi_wrong']
        z = jnp.asarray([0.3, -0.7], jnp.float32)

        def log_q(phi, stop):
            q = distributions.make_posterior(posterior, phi)
            return (distributions.stop_gradient(q) if stop else q).log_prob(z)

        live = jax.jit(jax.grad(log_q), static_argnums=1)(phi, False)
        stopped = jax.jit(jax.grad(log_q), static_argnums=1)(phi, True)
        self.assertTrue(np.all(live[: 2 * _D] != 0), live)  # loc and scale are live in q ...
        np.testing.assert_array_equal(stopped, np.zeros_like(stopped))  # ... and none stopped.
        # The value is unchanged.
        np.testing.assert_allclose(log_q(phi, True), log_q(phi, False), rtol=1e-6)

    def test_stop_gradient_of_an_unknown_family_raises(self):
        q = distributions.make_posterior('delta', jnp.zeros(2, jnp.float32))
        with self.assertRaisesRegex(ValueError, 'stop_gradient_parameters'):
            distributions.stop_gradient(q)

    # --- jit, vmap, shapes, dtypes. ---------------------------------------------------------

    @parameterized.named_parameters(
        ('elbo', losses.elbo, dict(k_samples=2)),
        ('iwae_dreg', losses.iwae, dict(k_samples=5, estimator='dreg')),
    )
    def test_traces_once_across_betas(self, objective, kwargs):
        traces = []

        def loss_and_grad(phi, key, beta):
            traces.append(None)  # Python side effect: runs only while tracing.
            loss = lambda phi: _ppca(objective, phi, beta=beta, **kwargs)(key)['loss']  # noqa: E731
            return jax.value_and_grad(loss)(phi)

        jitted = jax.jit(loss_and_grad)
        losses_by_beta = []
        for beta in (0.5, 1.0, 4.0):
            loss, grad = jitted(_PHI_WRONG, jax.random.key(0), jnp.float32(beta))
            self.assertEqual(loss.shape, ())
            self.assertTrue(np.isfinite(loss) and np.all(np.isfinite(grad)))
            losses_by_beta.append(float(loss))
        self.assertLen(traces, 1)
        self.assertLen(set(losses_by_beta), 3)  # beta really reaches the loss

    def test_vmap_over_a_conditional_batch_matches_per_example_calls(self):
        # CVAE: the label is bound into the closures, the objective is unchanged.
        xs = jnp.asarray(_RNG.normal(size=(3, _M)), jnp.float32)
        labels = jnp.array([0, 2, 1])

        def per_example(key, x, y):
            shift = jax.nn.one_hot(y, 3, dtype=jnp.float32)
            encode = (
                lambda x: distributions.make_posterior(  # noqa: E731
                    'diagonal', jnp.concatenate([x[:_D] + shift[:_D], shift[1:]])
                )
            )

            def decode(z):
                loc = z @ _THETA['W'].T + (_THETA['b'] + shift)[None]
                return distributions.make_likelihood('gaussian', loc, event_ndims=1)

            return losses.iwae(key, x, encode, decode, k_samples=4, estimator='dreg')

        keys = _keys(3)
        batched = jax.jit(jax.vmap(per_example, axis_name='batch'))(keys, xs, labels)
        single_fn = jax.jit(per_example)
        for i in range(3):
            single = single_fn(keys[i], xs[i], labels[i])
            for name, value in single.items():
                np.testing.assert_allclose(batched[name][i], value, rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(
        ('amortised_keys_per_example', 'amortised', 0), ('shared_z', 'shared', None)
    )
    def test_dreg_gradient_of_a_batch_mean_is_the_mean_of_per_example_gradients(
        self, encoder, key_axis
    ):
        # The DReG z-path weights travel through a custom VJP; check it under vmap + mean, the
        # way steps.py uses it. 'shared_z': one key and an encoder that ignores x, so z is not
        # batched while x is (the probes must still be per example).
        batch = jnp.stack([_IMAGE, 1 - _IMAGE, _IMAGE[::-1]])  # [3, 2, 3, 1]
        keys = _keys(3) if key_axis == 0 else jax.random.key(5)

        def loss(params, key, x):
            if encoder == 'amortised':
                encode = _image_encode(params, 'full')
            else:
                encode = lambda x: distributions.make_posterior('full', params['enc'][0])  # noqa: E731
            out = losses.iwae(key, x, encode, _image_decode(params), k_samples=4, estimator='dreg')
            return out['loss']

        per_example_loss = jax.vmap(loss, in_axes=(None, key_axis, 0), axis_name='batch')
        batch_grad = jax.jit(jax.grad(lambda p: jnp.mean(per_example_loss(p, keys, batch))))
        per_example_grad = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, key_axis, 0)))
        params = _image_params(2, 'full')
        expected = jax.tree.map(lambda g: g.mean(0), per_example_grad(params, keys, batch))
        for name, value in batch_grad(params).items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)

    def test_log_importance_weights_give_the_iwae_bound(self):
        def both(key):
            log_w = _ppca(losses.log_importance_weights, k_samples=7)(key)
            return log_w, _ppca(losses.iwae, k_samples=7)(jax.random.clone(key))['bound']

        log_w, bound = jax.jit(both)(jax.random.key(0))
        self.assertEqual(log_w.shape, (7,))
        log_w64 = np.asarray(log_w, np.float64)
        expected = np.log(np.mean(np.exp(log_w64 - log_w64.max()))) + log_w64.max()
        np.testing.assert_allclose(bound, expected, rtol=1e-6)

    @parameterized.named_parameters(
        ('k1_d1_diagonal', 1, 1, 'diagonal'),
        ('k1_d4_full', 1, 4, 'full'),
        ('k5_d1_full', 5, 1, 'full'),
        ('k5_d4_diagonal', 5, 4, 'diagonal'),
    )
    def test_shapes_and_dtypes(self, k, d, posterior):
        params = _image_params(d, posterior)

        def all_objectives(key, x):
            encode, decode = _image_encode(params, posterior), _image_decode(params)
            return {
                'elbo': losses.elbo(key, x, encode, decode, k_samples=k),
                'iwae': losses.iwae(key, x, encode, decode, k_samples=k, estimator='dreg'),
                'autoencoder': losses.autoencoder(key, x, encode, decode, k_samples=k),
            }

        batch = jnp.stack([_IMAGE, 1 - _IMAGE, _IMAGE])  # [3, 2, 3, 1]
        out = jax.jit(jax.vmap(all_objectives))(_keys(3), batch)
        for objective, terms in out.items():
            for name, value in terms.items():
                self.assertEqual(value.shape, (3,), (objective, name))
                self.assertEqual(value.dtype, jnp.float32, (objective, name))
                self.assertTrue(np.all(np.isfinite(value)), (objective, name))

    # --- Gradient checks. -------------------------------------------------------------------

    @parameterized.named_parameters(
        ('elbo_analytic_kl', losses.elbo, dict(k_samples=2)),
        ('elbo_mc_kl', losses.elbo, dict(k_samples=2, analytic_kl=False, kl_samples=3)),
        ('elbo_free_bits', losses.elbo, dict(free_bits=0.05)),
        ('iwae_reparam', losses.iwae, dict(k_samples=3)),
        ('autoencoder', losses.autoencoder, {}),
    )
    def test_check_grads(self, objective, kwargs):
        key = jax.random.key(3)

        def loss(params):
            encode, decode = _image_encode(params, 'full'), _image_decode(params)
            return objective(key, jnp.asarray(_IMAGE), encode, decode, **kwargs)['loss']

        # float32 finite differences: eps 1e-2 and 1e-2 tolerances (values ~5, curvature ~1).
        jtu.check_grads(
            jax.jit(loss), (_image_params(2, 'full'),), 1, ('rev',), atol=1e-2, rtol=1e-2, eps=1e-2
        )

    @parameterized.named_parameters(('stl', 'stl'), ('dreg', 'dreg'))
    def test_surrogate_gradients_are_finite(self, estimator):
        def loss(params):
            encode, decode = _image_encode(params, 'full'), _image_decode(params)
            out = losses.iwae(
                jax.random.key(0), jnp.asarray(_IMAGE), encode, decode, k_samples=3,
                estimator=estimator,
            )  # fmt: skip
            return out['loss']

        grads = jax.jit(jax.grad(loss))(_image_params(2, 'full'))
        self.assertTrue(all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)))
        self.assertTrue(all(np.any(g != 0) for g in jax.tree.leaves(grads)))

    # --- KL divergences. --------------------------------------------------------------------

    @parameterized.named_parameters(('d1', 1), ('d4', 4))
    def test_analytic_kl_matches_closed_forms_and_monte_carlo(self, d):
        rng = np.random.default_rng(d)
        raw = {
            name: rng.normal(size=distributions.posterior_num_params(name, d)).astype(np.float32)
            for name in ('diagonal', 'full')
        }
        moments = {'prior': (np.zeros(d), np.eye(d))}  # float64 mean and covariance, by hand
        for name, p in raw.items():
            p64 = p.astype(np.float64)
            scale_tri = np.diag(np.logaddexp(0, p64[d : 2 * d]))
            if name == 'full':
                scale_tri[np.tril_indices(d, -1)] = p64[2 * d :]
            moments[name] = (p64[:d], scale_tri @ scale_tri.T)

        def kl_gauss(m1, c1, m2, c2):
            inv2 = np.linalg.inv(c2)
            return 0.5 * (
                np.trace(inv2 @ c1)
                + (m2 - m1) @ inv2 @ (m2 - m1)
                - d
                + np.linalg.slogdet(c2)[1]
                - np.linalg.slogdet(c1)[1]
            )

        pairs = [
            ('diagonal', 'prior'),
            ('full', 'prior'),
            ('full', 'diagonal'),
            ('diagonal', 'full'),
        ]

        @jax.jit
        def compute(raw, keys):
            dists = {name: distributions.make_posterior(name, p) for name, p in raw.items()}
            dists['prior'] = distributions.standard_normal_prior(d)
            out = {}
            for a, b in pairs:
                q, p = dists[a], dists[b]
                out[a, b] = {
                    'analytic': losses.kl_divergence(q, p),
                    'self': losses.kl_divergence(q, q),
                    'mc': jax.vmap(
                        lambda k, q=q, p=p: losses.kl_divergence(q, p, key=k, analytic=False)
                    )(keys),
                }
            per_dim = {name: losses.kl_per_dimension(dists[name]) for name in raw}
            return out, per_dim

        out, per_dim = compute(raw, _keys(_NUM_KEYS))
        for a, b in pairs:
            expected = kl_gauss(*moments[a], *moments[b])
            np.testing.assert_allclose(out[a, b]['analytic'], expected, rtol=1e-5, atol=1e-6)
            self.assertGreater(out[a, b]['analytic'], 0)
            np.testing.assert_allclose(out[a, b]['self'], 0.0, atol=1e-6)  # KL(q, q) = 0
            mean, se = _mean_and_se(out[a, b]['mc'])  # n = 2000 one-sample estimates
            self.assertLess(abs(mean - expected), 4 * se, (a, b))
        # Per-dimension KL: marginal KLs; they sum to the KL for a diagonal q, to less for full.
        for name in raw:
            m, c = moments[name]
            expected = 0.5 * (m**2 + np.diag(c) - 1 - np.log(np.diag(c)))
            np.testing.assert_allclose(per_dim[name], expected, rtol=1e-5, atol=1e-6)
        kl_diagonal, kl_full = (
            out['diagonal', 'prior']['analytic'],
            out['full', 'prior']['analytic'],
        )
        np.testing.assert_allclose(per_dim['diagonal'].sum(), kl_diagonal, rtol=1e-5)
        self.assertLessEqual(per_dim['full'].sum(), kl_full + 1e-5)

    def test_kl_without_closed_form_needs_a_key_and_falls_back_to_monte_carlo(self):
        q = distributions.make_posterior('diagonal', jnp.array([0.3, -0.2, 0.1, 0.4]))
        laplace = distrax.Independent(distrax.Laplace(jnp.zeros(2), jnp.ones(2)), 1)
        with self.assertRaisesRegex(ValueError, 'needs a key'):
            losses.kl_divergence(q, laplace)
        kl = jax.jit(lambda k: losses.kl_divergence(q, laplace, key=k, num_samples=10))(
            jax.random.key(0)
        )
        self.assertTrue(np.isfinite(kl))
        with self.assertRaisesRegex(ValueError, 'Gaussian'):
            losses.kl_per_dimension(laplace)

    # --- Invariants and options. ------------------------------------------------------------

    def test_beta_zero_gives_the_reconstruction_loss(self):
        run = jax.jit(lambda beta: _ppca(losses.elbo, beta=beta)(jax.random.key(0)))
        out = run(jnp.float32(0.0))
        self.assertEqual(float(out['loss']), float(out['recon']))
        self.assertGreater(float(out['kl']), 0.1)
        out = run(jnp.float32(2.0))
        np.testing.assert_allclose(out['loss'], out['recon'] + 2 * out['kl'], rtol=1e-6)
        np.testing.assert_allclose(out['elbo'], -(out['recon'] + out['kl']), rtol=1e-6)

    def test_free_bits(self):
        phi = jnp.array([0.3, -0.2, 0.1, -1.0], jnp.float32)  # diagonal q, D = 2
        x = jnp.asarray(_X)

        def run(phi, posterior='diagonal', **kwargs):
            encode = lambda x: distributions.make_posterior(posterior, phi)  # noqa: E731
            return losses.elbo(jax.random.key(0), x, encode, _decode(_THETA), **kwargs)

        @jax.jit
        def compute(phi, phi_full, zero):
            loss_grad = jax.grad(lambda p: run(p, free_bits=10.0)['loss'])(phi)
            recon_grad = jax.grad(lambda p: run(p, free_bits=10.0)['recon'])(phi)
            return {
                'high': run(phi, free_bits=10.0, beta=2.0),
                'loss_grad': loss_grad,
                'recon_grad': recon_grad,
                'zero_diagonal': run(phi, free_bits=zero)['loss'],  # traced zero
                'plain_diagonal': run(phi)['loss'],
                'zero_full': run(phi_full, 'full', free_bits=zero)['loss'],
                'plain_full': run(phi_full, 'full')['loss'],
                'per_dim_full': losses.kl_per_dimension(
                    distributions.make_posterior('full', phi_full)
                ),
                'kl_full': run(phi_full, 'full')['kl'],
            }

        out = compute(phi, _PHI_EXACT, jnp.float32(0.0))  # the exact posterior is correlated
        # lambda above every per-dimension KL: the loss holds D * lambda and no KL gradient.
        high = out['high']
        np.testing.assert_allclose(high['loss'], high['recon'] + 2.0 * _D * 10.0, rtol=1e-6)
        np.testing.assert_allclose(out['loss_grad'], out['recon_grad'], rtol=1e-6)
        # lambda = 0 changes nothing, for a full q too (its total-correlation remainder is kept).
        self.assertGreater(out['kl_full'] - out['per_dim_full'].sum(), 1e-2)
        for posterior in ('diagonal', 'full'):
            np.testing.assert_allclose(
                out[f'zero_{posterior}'], out[f'plain_{posterior}'], rtol=1e-6
            )
        with self.assertRaisesRegex(ValueError, 'analytic_kl=True'):
            run(phi, free_bits=0.5, analytic_kl=False)
        with self.assertRaisesRegex(ValueError, 'default prior'):
            run(phi, free_bits=0.5, prior=distributions.standard_normal_prior(_D))

    def test_autoencoder_matches_numpy(self):
        phi = jnp.array([0.3, -0.2, 0.1, -1.0], jnp.float32)
        encode = lambda x: distributions.make_posterior('diagonal', phi)  # noqa: E731
        out = jax.jit(lambda key, x: losses.autoencoder(key, x, encode, _decode(_THETA), beta=3.0))(
            jax.random.key(0), jnp.asarray(_X)
        )
        loc = _W @ np.array([0.3, -0.2]) + _B  # the code is q's mean
        recon = -stats.norm.logpdf(_X, loc, _SIGMA).sum()
        np.testing.assert_allclose(out['loss'], recon, rtol=1e-6)
        np.testing.assert_allclose(out['recon'], recon, rtol=1e-6)
        np.testing.assert_allclose(out['mse'], np.sum((loc - _X) ** 2), rtol=1e-5)

    # --- Errors. ----------------------------------------------------------------------------

    def test_mismatched_shapes_raise_naming_both(self):
        x = jnp.asarray(_X)  # [3]
        encode = _encode(_PHI_WRONG)

        def wrong_event(z):
            return distributions.make_likelihood(
                'bernoulli', jnp.zeros(z.shape[:1] + (4,)), event_ndims=1
            )

        def forgets_samples(z):
            return distributions.make_likelihood('bernoulli', jnp.zeros((3,)), event_ndims=1)

        key = jax.random.key(0)
        # jax.eval_shape only traces: the errors are raised at trace time, before any compile.
        for objective in (losses.elbo, losses.iwae, losses.autoencoder):
            with self.assertRaisesRegex(ValueError, r'event shape \(4,\).*x has shape \(3,\)'):
                jax.eval_shape(lambda k, f=objective: f(k, x, encode, wrong_event), key)
            with self.assertRaisesRegex(
                ValueError, r'batch shape \(\).*expected event shape \(3,\)'
            ):
                jax.eval_shape(lambda k, f=objective: f(k, x, encode, forgets_samples), key)
        batched_encode = lambda x: distributions.make_posterior('diagonal', jnp.zeros((2, 4)))  # noqa: E731
        with self.assertRaisesRegex(ValueError, r'batch shape \(2,\)'):
            jax.eval_shape(lambda k: losses.elbo(k, x, batched_encode, _decode(_THETA)), key)
        wrong_prior = distributions.standard_normal_prior(3)
        with self.assertRaisesRegex(ValueError, r'event shape \(3,\).*event shape \(2,\)'):
            jax.eval_shape(
                lambda k: losses.iwae(k, x, encode, _decode(_THETA), prior=wrong_prior), key
            )

    def test_unknown_names_raise(self):
        with self.assertRaisesRegex(ValueError, 'reparam'):
            jax.eval_shape(_ppca(losses.iwae, estimator='vimco'), jax.random.key(0))
        with self.assertRaisesRegex(ValueError, "'elbo', 'iwae', 'autoencoder'"):
            losses.get_objective('vae')
        self.assertIs(losses.get_objective('iwae'), losses.iwae)


class BetaScheduleTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.enter_context(jax.numpy_dtype_promotion('strict'))

    def test_zero_warmup_is_a_constant_beta(self):
        # Pinned: optax.linear_schedule(0, beta, 0) would stay at 0.0 forever.
        beta_fn = jax.jit(losses.make_beta_fn(4.0, 0))
        for step in (0, 1, 10**6):
            self.assertEqual(float(beta_fn(jnp.int32(step))), 4.0)
        self.assertEqual(beta_fn(jnp.int32(0)).dtype, jnp.float32)

    def test_warmup_ramps_linearly_then_holds(self):
        beta_fn = jax.jit(losses.make_beta_fn(2.0, 10))
        values = [float(beta_fn(jnp.int32(s))) for s in (0, 1, 5, 10, 11, 1000)]
        np.testing.assert_allclose(values, [0.0, 0.2, 1.0, 2.0, 2.0, 2.0], rtol=1e-6)

    def test_negative_warmup_raises(self):
        with self.assertRaisesRegex(ValueError, 'beta_warmup_steps'):
            losses.make_beta_fn(1.0, -1)


if __name__ == '__main__':
    absltest.main()
