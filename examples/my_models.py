"""A model of your own for vae_jax: a one-layer Gaussian VAE with a learned prior scale.

Train it (from the repository root, so that `examples` is importable):
  python -m vae_jax.train --config configs/test.py --workdir runs/my_vae \
      --config.model.module=examples.my_models:MyVAE --config.input.binarize=dynamic
or from Python:
  trainer.train_and_evaluate(config, 'runs/my_vae', model=MyVAE(latent_dim=4))
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last axis: [K, D] -> [K]."""
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


class LazyDense(nn.Module):
    """A Dense layer whose width (the data size) is given at the call."""

    @nn.compact
    def __call__(self, h, features):
        return nn.Dense(features)(h)


class MyVAE(nn.Module):
    """x -> 64 -> q(z|x) Gaussian [latent_dim]; z -> 64 -> Bernoulli p(x|z); p(z) = N(0, s^2 I)."""

    latent_dim: int = 2
    hidden: int = 64

    def setup(self):
        self.encoder_hidden = nn.Dense(self.hidden)
        self.encoder_out = nn.Dense(2 * self.latent_dim)
        self.decoder_hidden = nn.Dense(self.hidden)
        self.decoder_out = LazyDense()
        self.prior_log_scale = self.param('prior_log_scale', nn.initializers.zeros, ())

    @property
    def latent_shapes(self):
        return {'z': (self.latent_dim,)}

    def _q(self, x):
        h = self.encoder_out(jnp.tanh(self.encoder_hidden(x.reshape(-1))))
        return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :]) + 1e-4

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)  # [D]
        return {'z': loc[None] + scale[None] * noise['z']}  # [K, D]

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q(x)
        return normal_log_prob(z['z'], loc[None], scale[None])  # [K]

    def sample_and_log_posterior(self, x, noise, y=None, train=False):
        # Optional: the sample and its log q from one encoder pass (reparameterised objectives
        # use it; without it they call sample_posterior and then log_posterior).
        loc, scale = self._q(x)
        eps = noise['z']  # [K, D]
        log_q = jnp.sum(-0.5 * jnp.square(eps) - jnp.log(scale)[None] - _HALF_LOG_2PI, -1)
        return {'z': loc[None] + scale[None] * eps}, log_q  # [K]

    def log_likelihood(self, x, z, y=None, train=False):
        flat = x.reshape(-1)
        logits = self.decoder_out(jnp.tanh(self.decoder_hidden(z['z'])), flat.shape[0])
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)  # Bernoulli, [K]

    def log_prior(self, z, y=None, train=False):
        scale = jnp.full(z['z'].shape, jnp.exp(self.prior_log_scale))
        return normal_log_prob(z['z'], 0.0, scale)  # [K]
