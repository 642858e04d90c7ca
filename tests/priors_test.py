"""Tests for vae_jax.priors: mixture-of-Gaussians and VampPrior densities against numpy/scipy.

The references below recompute everything from the raw parameter arrays with numpy: the encoder
forward pass at the pseudo-inputs, softplus scales, and a log-mean-exp over the components.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from scipy import special, stats

from configs import default
from vae_jax import models, priors

_D, _K, _DATA = 3, 4, (5,)


def _model(prior, posterior='diagonal'):
    config = default.get_config()
    config.model.encoder = 'dense(7)-tanh'
    config.model.decoder = 'dense(7)-tanh-dense(out)'
    config.model.latent_dim = _D
    config.model.posterior = posterior
    config.model.likelihood = 'bernoulli'
    config.model.prior.name = prior
    config.model.prior.num_components = _K
    model = models.create_model(config.model, _DATA, 'elbo')
    params = models.init_variables(model, jax.random.key(1), _DATA, False)['params']
    # Move the parameters away from their symmetric start, so that components differ.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(
        tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    return model, params


def _softplus(v):
    return np.logaddexp(0.0, v)


def _numpy_encoder(params, u):
    """The 'dense(7)-tanh' body and Dense head in numpy: u [K, 5] -> [K, 2D]."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['encoder'])
    h = np.tanh(u @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
    return h @ p['head']['kernel'] + p['head']['bias']


_Z = np.random.default_rng(0).normal(size=(6, _D)).astype(np.float32)


class PriorDensityTest(parameterized.TestCase):
    def _log_prior(self, model, params):
        fn = jax.jit(lambda p, z: model.apply({'params': p}, {'z': z}, method='log_prior'))
        return np.asarray(fn(params, jnp.asarray(_Z)), np.float64)

    def test_vamp_prior_is_the_mean_of_the_posteriors_at_the_pseudo_inputs(self):
        model, params = _model('vamp')
        u = special.expit(np.asarray(params['pseudo_inputs']['raw'], np.float64))  # [K, 5]
        out = _numpy_encoder(params, u)
        loc, scale = out[:, :_D], _softplus(out[:, _D:])
        per_component = np.stack(
            [stats.norm(loc[k], scale[k]).logpdf(_Z).sum(-1) for k in range(_K)], 1
        )  # [6, K]
        expected = special.logsumexp(per_component, axis=1) - np.log(_K)
        np.testing.assert_allclose(self._log_prior(model, params), expected, rtol=1e-5, atol=1e-5)

    def test_vamp_prior_with_full_covariance_posteriors(self):
        model, params = _model('vamp', posterior='full')
        u = special.expit(np.asarray(params['pseudo_inputs']['raw'], np.float64))
        out = _numpy_encoder(params, u)  # [K, D + D + D(D-1)/2]
        rows, cols = np.tril_indices(_D, -1)
        per_component = []
        for k in range(_K):
            scale_tri = np.diag(_softplus(out[k, _D : 2 * _D]))
            scale_tri[rows, cols] = out[k, 2 * _D :]
            cov = scale_tri @ scale_tri.T
            per_component.append(stats.multivariate_normal(out[k, :_D], cov).logpdf(_Z))
        expected = special.logsumexp(np.stack(per_component, 1), axis=1) - np.log(_K)
        np.testing.assert_allclose(self._log_prior(model, params), expected, rtol=1e-5, atol=1e-5)

    def test_mixture_of_gaussians(self):
        model, params = _model('mog')
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['prior_mixture'])
        log_pi = p['logits'] - special.logsumexp(p['logits'])
        scale = _softplus(p['raw_scale'])
        per_component = np.stack(
            [log_pi[k] + stats.norm(p['loc'][k], scale[k]).logpdf(_Z).sum(-1) for k in range(_K)],
            1,
        )
        expected = special.logsumexp(per_component, axis=1)
        np.testing.assert_allclose(self._log_prior(model, params), expected, rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(
        ('standard_normal', 'standard_normal', set()),
        ('mog', 'mog', {'prior_mixture'}),
        ('vamp', 'vamp', {'pseudo_inputs'}),
    )
    def test_prior_parameters_live_in_the_model(self, prior, extra):
        _, params = _model(prior)
        self.assertEqual(set(params), {'encoder', 'decoder'} | extra)

    def test_prior_gradients_reach_the_pseudo_inputs_and_the_encoder(self):
        model, params = _model('vamp')
        grads = jax.grad(
            lambda p: jnp.sum(
                model.apply({'params': p}, {'z': jnp.asarray(_Z)}, method='log_prior')
            )
        )(params)
        self.assertGreater(float(jnp.abs(grads['pseudo_inputs']['raw']).max()), 0)
        self.assertGreater(float(jnp.abs(grads['encoder']['head']['kernel']).max()), 0)

    def test_unknown_prior_raises(self):
        with self.assertRaisesRegex(ValueError, "model.prior.name='flow' is not one of"):
            priors.make_prior('flow', {}, latent_dim=2)


if __name__ == '__main__':
    absltest.main()
