"""Tests for vae_jax.two_layer: the two-stochastic-layer model's densities against numpy/scipy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import one_pass_testing
from absl.testing import absltest, parameterized
from scipy import stats

from vae_jax import models, protocol, two_layer

_SHAPE = (3, 2, 1)
_MODEL = two_layer.TwoLayerVAE(
    latent_dims=(4, 2), encoder_dims=((5,), (3,)), decoder_dims=((3,), (5,))
)


def _params():
    return models.init_variables(_MODEL, jax.random.key(0), _SHAPE, False)['params']


def _mlp(p, h):
    """numpy forward pass of `two_layer.MLP` (one hidden tanh layer here)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    h = np.tanh(h @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
    return h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']


class TwoLayerTest(absltest.TestCase):
    def test_follows_the_protocol(self):
        protocol.check_protocol(_MODEL)
        self.assertEqual(_MODEL.latent_shapes, {'z1': (4,), 'z2': (2,)})
        self.assertEqual(set(_params()), {'q_z1', 'q_z2', 'p_z1', 'p_x'})

    def test_densities_and_sampling_match_numpy(self):
        params = _params()
        rng = np.random.default_rng(1)
        x = rng.integers(0, 2, size=_SHAPE).astype(np.float32)
        noise = {'z1': rng.normal(size=(3, 4)), 'z2': rng.normal(size=(3, 2))}
        noise = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), noise)

        def call(method, *args):
            return np.asarray(_MODEL.apply({'params': params}, *args, method=method), np.float64)

        z = jax.tree.map(
            np.asarray, _MODEL.apply({'params': params}, x, noise, method='sample_posterior')
        )
        out1 = _mlp(params['q_z1'], x.reshape(-1).astype(np.float64))
        loc1, scale1 = out1[:4], np.exp(out1[4:])
        np.testing.assert_allclose(
            z['z1'], loc1 + scale1 * np.asarray(noise['z1']), rtol=1e-5, atol=1e-5
        )
        out2 = _mlp(params['q_z2'], z['z1'].astype(np.float64))
        loc2, scale2 = out2[:, :2], np.exp(out2[:, 2:])
        np.testing.assert_allclose(
            z['z2'], loc2 + scale2 * np.asarray(noise['z2']), rtol=1e-5, atol=1e-5
        )

        log_q = stats.norm(loc1, scale1).logpdf(z['z1']).sum(-1)
        log_q += stats.norm(loc2, scale2).logpdf(z['z2']).sum(-1)
        np.testing.assert_allclose(call('log_posterior', x, z), log_q, rtol=1e-5, atol=1e-4)

        out_p = _mlp(params['p_z1'], z['z2'].astype(np.float64))
        log_p = stats.norm(out_p[:, :4], np.exp(out_p[:, 4:])).logpdf(z['z1']).sum(-1)
        log_p += stats.norm(0, 1).logpdf(z['z2']).sum(-1)
        np.testing.assert_allclose(call('log_prior', z), log_p, rtol=1e-5, atol=1e-4)

        logits = _mlp(params['p_x'], z['z1'].astype(np.float64))
        log_px = stats.bernoulli(1 / (1 + np.exp(-logits))).logpmf(x.reshape(-1)).sum(-1)
        np.testing.assert_allclose(call('log_likelihood', x, z), log_px, rtol=1e-5, atol=1e-4)

    def test_sample_prior_draws_z2_then_z1_given_z2(self):
        params = _params()
        rng = np.random.default_rng(2)
        n = 20_000
        noise = {'z1': rng.normal(size=(n, 4)), 'z2': rng.normal(size=(n, 2))}
        noise = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), noise)
        z = jax.tree.map(np.asarray, _MODEL.apply({'params': params}, noise, method='sample_prior'))
        np.testing.assert_array_equal(z['z2'], noise['z2'])
        # z1 = loc + scale * noise of p(z1|z2), computed here in numpy.
        out = _mlp(params['p_z1'], z['z2'].astype(np.float64))
        loc, scale = out[:, :4], np.exp(out[:, 4:])
        np.testing.assert_allclose(
            z['z1'], loc + scale * np.asarray(noise['z1']), rtol=1e-5, atol=1e-5
        )
        # The model's own log p(z) of its draws: its mean is E[log p(z2) - sum log scale(z2)]
        # - (D1 / 2)(1 + log 2 pi) (the conditional's expected log-density given z2, at the
        # same z2). What differs is z1's noise, -sum noise^2 / 2 + D1 / 2, of variance D1 / 2:
        # a draw of z1 at another scale than p(z1|z2)'s moves the mean by many standard errors.
        log_p = np.asarray(_MODEL.apply({'params': params}, z, method='log_prior'), np.float64)
        expected = (
            stats.norm.logpdf(z['z2'].astype(np.float64)).sum(-1)
            - np.log(scale).sum(-1)
            - 2.0 * (1.0 + np.log(2 * np.pi))
        )
        self.assertLess(abs(log_p.mean() - expected.mean()), 5.0 * np.sqrt(2.0 / n))

    def test_decode_mean_is_the_mean_of_the_bernoulli_likelihood(self):
        params = _params()
        rng = np.random.default_rng(3)
        x = rng.integers(0, 2, size=_SHAPE).astype(np.float32)
        z = {'z1': rng.normal(size=(3, 4)) * 2.0, 'z2': rng.normal(size=(3, 2))}
        z = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), z)
        mean = np.asarray(_MODEL.apply({'params': params}, z, method='decode_mean'), np.float64)
        self.assertEqual(mean.shape, (3, 6))  # [K, M]: the flattened x
        logits = _mlp(params['p_x'], np.asarray(z['z1'], np.float64))
        np.testing.assert_allclose(mean, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
        # log p(x|z) is the Bernoulli log-pmf with that mean, computed here.
        flat = x.reshape(-1).astype(np.float64)
        log_px = np.sum(flat * np.log(mean) + (1 - flat) * np.log1p(-mean), -1)
        log_likelihood = _MODEL.apply({'params': params}, x, z, method='log_likelihood')
        np.testing.assert_allclose(log_likelihood, log_px, rtol=1e-5, atol=1e-4)

    def test_decode_mean_before_the_likelihood_exists_says_so(self):
        z = {'z1': jnp.zeros((1, 4)), 'z2': jnp.zeros((1, 2))}
        with self.assertRaisesRegex(ValueError, r"p_x.output_width: .*no output layer 'Dense_1'"):
            _MODEL.init(jax.random.key(0), z, method='decode_mean')


def _random_params(seed=3, scale=0.4):
    """Every parameter redrawn, so no layer sits at a special (e.g. zero-bias) point."""
    leaves, tree = jax.tree.flatten(_params())
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, new)


class OnePassPosteriorTest(parameterized.TestCase):
    def test_sample_and_log_posterior_is_sample_then_log_posterior(self):
        variables = {'params': _random_params()}
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.integers(0, 2, size=_SHAPE), jnp.float32)
        noise = {
            'z1': jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
            'z2': jnp.asarray(rng.normal(size=(5, 2)), jnp.float32),
        }
        call = functools.partial(_MODEL.apply, variables)
        z, log_q = call(x, noise, method='sample_and_log_posterior')
        z_two = call(x, noise, method='sample_posterior')
        log_q_two = call(x, z_two, method='log_posterior')
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6), z, z_two)
        self.assertEqual(log_q.shape, (5,))
        np.testing.assert_allclose(log_q, log_q_two, rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(
        ('elbo', 'elbo', dict(k_samples=4)),
        ('elbo_more_kl_samples', 'elbo', dict(k_samples=2, kl_samples=3)),
        ('iwae_reparam', 'iwae', dict(k_samples=4)),
        ('miwae', 'miwae', dict(k_samples=4, miwae_m=2)),
    )
    def test_training_loss_and_gradients_match_the_two_pass_path(self, objective, options):
        params = _random_params()
        value_a, grad_a = one_pass_testing.batch_loss(_MODEL, _SHAPE, objective, True, **options)(
            params
        )
        value_b, grad_b = one_pass_testing.batch_loss(_MODEL, _SHAPE, objective, False, **options)(
            params
        )
        np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5), grad_a, grad_b
        )
        for name in ('q_z1', 'q_z2'):  # the encoders get a gradient through the one pass
            self.assertGreater(
                max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad_a[name])), 1e-3
            )


if __name__ == '__main__':
    absltest.main()
