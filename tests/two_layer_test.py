"""Tests for vae_jax.two_layer: the two-stochastic-layer model's densities against numpy/scipy."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
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


if __name__ == '__main__':
    absltest.main()
