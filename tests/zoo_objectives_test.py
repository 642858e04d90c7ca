"""Tests for vae_jax.zoo_objectives on a toy linear-Gaussian model (one stochastic layer).

q(z|x) = N(A x + a, diag(exp(s))^2) (phi = A, a, s), p(z) = N(0, I), p(x|z) = N(W z + b, 0.5^2)
(theta = W, b). The objectives are compared with `losses.model_iwae` / `model_elbo` and with
`jax.grad` of hand-written bounds on the same draws.
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from vae_jax import distributions, losses, objectives, tcvae, zoo_objectives

_D, _X_DIM, _K = 2, 3, 6
_R = np.random.default_rng(0)
_PARAMS = {
    'phi': {
        'A': jnp.asarray(_R.normal(size=(_D, _X_DIM)) * 0.5, jnp.float32),
        'a': jnp.asarray(_R.normal(size=_D) * 0.5, jnp.float32),
        's': jnp.asarray(_R.normal(size=_D) * 0.3, jnp.float32),
    },
    'theta': {
        'W': jnp.asarray(_R.normal(size=(_X_DIM, _D)), jnp.float32),
        'b': jnp.asarray(_R.normal(size=_X_DIM), jnp.float32),
    },
}
_X = jnp.asarray(_R.normal(size=_X_DIM), jnp.float32)
_XS = jnp.asarray(_R.normal(size=(16, _X_DIM)), jnp.float32)


def _model(params, x=_X, full=False):
    phi, theta = params['phi'], params['theta']

    def encode(x):
        loc = phi['A'] @ x + phi['a']
        if full:
            return distrax.MultivariateNormalTri(loc, jnp.diag(jnp.exp(phi['s'])))
        return distrax.MultivariateNormalDiag(loc, jnp.exp(phi['s']))

    def decode(z):
        loc = z @ theta['W'].T + theta['b'][None]
        return distributions.make_likelihood('gaussian', loc, event_ndims=1, sigma=0.5)

    return losses.one_layer_model(x, encode, decode)


def _log_w(params, key, k):
    return losses.model_log_weights(key, _model(params), k_samples=k)


_KEY = jax.random.key(3)


class BoundsOnModelsTest(parameterized.TestCase):
    def test_miwae_one_group_is_iwae(self):
        miwae = zoo_objectives.model_miwae(_KEY, _model(_PARAMS), k_samples=_K, miwae_m=1)
        iwae = losses.model_iwae(_KEY, _model(_PARAMS), k_samples=_K)
        np.testing.assert_allclose(miwae['loss'], iwae['loss'], rtol=1e-6)
        np.testing.assert_allclose(miwae['bound'], iwae['bound'], rtol=1e-6)
        np.testing.assert_allclose(miwae['iwae'], iwae['bound'], rtol=1e-6)

    def test_miwae_one_sample_per_group_is_the_k_sample_elbo(self):
        miwae = zoo_objectives.model_miwae(_KEY, _model(_PARAMS), k_samples=_K, miwae_m=_K)
        elbo = losses.model_elbo(
            _KEY, _model(_PARAMS), k_samples=_K, analytic_kl=False, kl_samples=_K
        )
        np.testing.assert_allclose(miwae['loss'], elbo['loss'], rtol=1e-5)

    @parameterized.named_parameters(('elbo_end', 1.0), ('iwae_end', 0.0))
    def test_ciwae_endpoints(self, ciwae_beta):
        ciwae = zoo_objectives.model_ciwae(
            _KEY, _model(_PARAMS), k_samples=_K, ciwae_beta=ciwae_beta
        )
        log_w = _log_w(_PARAMS, _KEY, _K)
        expected = jnp.mean(log_w) if ciwae_beta else jax.nn.logsumexp(log_w) - np.log(_K)
        np.testing.assert_allclose(-ciwae['loss'], expected, rtol=1e-5)

    def test_ess_is_reported_in_range(self):
        out = jax.jit(lambda key: zoo_objectives.model_ciwae(key, _model(_PARAMS), k_samples=_K))(
            _KEY
        )
        self.assertBetween(float(out['ess']), 1.0, float(_K))
        self.assertTrue(all(np.isfinite(float(v)) for v in out.values()))

    def test_bad_group_size_and_estimator_raise(self):
        with self.assertRaisesRegex(ValueError, 'miwae_m=4 .* k_samples=6'):
            zoo_objectives.model_miwae(_KEY, _model(_PARAMS), k_samples=6, miwae_m=4)
        with self.assertRaisesRegex(ValueError, "gradient_estimator='dreg'.*'piwae'"):
            zoo_objectives.model_piwae(_KEY, _model(_PARAMS), k_samples=6, estimator='dreg')


class PiwaeGradientTest(absltest.TestCase):
    def test_encoder_gets_miwae_and_decoder_gets_iwae_k_gradients(self):
        m = 3

        def piwae_loss(params):
            return zoo_objectives.model_piwae(_KEY, _model(params), k_samples=_K, piwae_m=m)['loss']

        def grouped_iwae_loss(params, group):  # written directly on the same draws
            lw = _log_w(params, _KEY, _K).reshape(_K // group, group)
            return -jnp.mean(jax.nn.logsumexp(lw, axis=1) - np.log(group))

        grads = jax.jit(jax.grad(piwae_loss))(_PARAMS)
        grad_m = jax.grad(grouped_iwae_loss)(_PARAMS, m)
        grad_k = jax.grad(grouped_iwae_loss)(_PARAMS, _K)
        for part, expected, other in (('phi', grad_m, grad_k), ('theta', grad_k, grad_m)):
            for name in _PARAMS[part]:
                np.testing.assert_allclose(
                    grads[part][name], expected[part][name], rtol=1e-5, atol=1e-6
                )
                # The check can fail: the other bound's gradient differs here.
                gap = jnp.max(jnp.abs(expected[part][name] - other[part][name]))
                self.assertGreater(float(gap), 1e-4, f'{part}/{name}')
        np.testing.assert_allclose(piwae_loss(_PARAMS), grouped_iwae_loss(_PARAMS, _K), rtol=1e-6)


class BetaTcvaeTest(absltest.TestCase):
    def _bind(self, params, full=False):
        return lambda x, y: _model(params, x, full=full)

    def test_batch_terms_match_tcvae_on_the_same_draws(self):
        keys = jax.random.split(_KEY, _XS.shape[0])
        run = functools.partial(
            zoo_objectives.model_beta_tcvae, beta=4.0, tcvae_gamma=0.5, dataset_size=1000
        )
        terms = jax.jit(lambda k: run(k, self._bind(_PARAMS), _XS, None))(keys)
        for v in terms.values():
            self.assertEqual(v.shape, (16,))
        # Independent: the same draws through the one-layer model, then tcvae.tcvae.
        models = [_model(_PARAMS, x) for x in _XS]
        z = jnp.stack([mdl.sample(k, 1)[0] for mdl, k in zip(models, keys, strict=True)])
        log_px = jnp.stack(
            [mdl.log_likelihood(zi[None])[0] for mdl, zi in zip(models, z, strict=True)]
        )
        loc = jnp.stack([mdl.one_layer.q.mean() for mdl in models])
        scale = jnp.stack([mdl.one_layer.q.stddev() for mdl in models])
        expected = tcvae.tcvae(log_px, z, loc, scale, dataset_size=1000, beta=4.0, gamma=0.5)
        for name in ('loss', 'mi', 'tc', 'dwkl', 'kl', 'recon', 'elbo'):
            np.testing.assert_allclose(jnp.mean(terms[name]), expected[name], rtol=1e-5, atol=1e-5)

    def test_full_covariance_posterior_raises(self):
        keys = jax.random.split(_KEY, 4)
        with self.assertRaisesRegex(ValueError, "model.posterior='diagonal'"):
            zoo_objectives.model_beta_tcvae(
                keys, self._bind(_PARAMS, full=True), _XS[:4], None, dataset_size=100
            )

    def test_needs_the_dataset_size(self):
        with self.assertRaisesRegex(ValueError, 'dataset_size=0'):
            zoo_objectives.model_beta_tcvae(
                jax.random.split(_KEY, 4), self._bind(_PARAMS), _XS[:4], None
            )


class RegistryTest(absltest.TestCase):
    def test_config_names_resolve(self):
        for name in ('miwae', 'ciwae', 'piwae', 'beta_tcvae', 'elbo', 'iwae'):
            self.assertIsInstance(objectives.get(name), objectives.Objective)
        self.assertIs(objectives.get('miwae').fn, zoo_objectives.model_miwae)
        self.assertIs(objectives.get('beta_tcvae').fn, zoo_objectives.model_beta_tcvae)
        with self.assertRaisesRegex(ValueError, "objective='tcvae' .*beta_tcvae"):
            objectives.get('tcvae')


if __name__ == '__main__':
    absltest.main()
