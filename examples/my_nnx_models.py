"""A Flax NNX model for vae_jax: `examples/my_models.py`'s one-layer VAE written with `flax.nnx`.

The same protocol members as the Linen `MyVAE` (`vae_jax.models.LatentVariableModel`), plus
`sample_prior` and `decode_mean` for pictures and `vae_jax.load(...).sample`. Layers are created
in `__init__` from `rngs`; the library adapts the module once, outside the jitted step
(`vae_jax.nnx_models.NNXModel`), so the step sees only its parameter pytree.

Train it (from the repository root, so that `examples` is importable); by import path the
library supplies `rngs=nnx.Rngs(params=<int from the run's seed>)`:
  python -m vae_jax.train --config configs/test.py --workdir runs/my_nnx_vae \
      --config.model.module=examples.my_nnx_models:MyNNXVAE --config.input.binarize=dynamic
(for other data, set `c.model.module_kwargs = ml_collections.ConfigDict(dict(data_dim=784))` in
a config file)
or from Python, with parameters of your choosing (`build.nnx_rngs(config.seed)` gives the ones
the import path would):
  trainer.train_and_evaluate(config, 'runs/my_nnx_vae', model=MyNNXVAE(rngs=nnx.Rngs(0)))
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last axis: [K, D] -> [K]."""
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


class MyNNXVAE(nnx.Module):
    """x [M] -> 64 -> q(z|x) Gaussian [latent_dim]; z -> 64 -> Bernoulli p(x|z); p(z) = N(0, s^2 I).

    Attributes:
      data_dim: M, the size of one flattened example (64, the embedded 8x8 digits; 784 for
        MNIST): NNX layers know their input and output sizes when they are built.
      latent_dim: D.
      hidden: the hidden layers' width.
    """

    def __init__(
        self, data_dim: int = 64, latent_dim: int = 2, hidden: int = 64, *, rngs: nnx.Rngs
    ):
        self.latent_dim = latent_dim
        self.encoder_hidden = nnx.Linear(data_dim, hidden, rngs=rngs)
        self.encoder_out = nnx.Linear(hidden, 2 * latent_dim, rngs=rngs)
        self.decoder_hidden = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.decoder_out = nnx.Linear(hidden, data_dim, rngs=rngs)
        self.prior_log_scale = nnx.Param(jnp.zeros(()))

    @property
    def latent_shapes(self):
        return {'z': (self.latent_dim,)}

    def _q(self, x):
        h = self.encoder_out(jnp.tanh(self.encoder_hidden(x.reshape(-1))))
        return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :]) + 1e-4

    def _logits(self, z):
        return self.decoder_out(jnp.tanh(self.decoder_hidden(z['z'])))  # [K, M]

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)  # [D]
        return {'z': loc[None] + scale[None] * noise['z']}  # [K, D]

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q(x)
        return normal_log_prob(z['z'], loc[None], scale[None])  # [K]

    def sample_and_log_posterior(self, x, noise, y=None, train=False):
        # Optional: the sample and its log q from one encoder pass.
        loc, scale = self._q(x)
        eps = noise['z']  # [K, D]
        log_q = jnp.sum(-0.5 * jnp.square(eps) - jnp.log(scale)[None] - _HALF_LOG_2PI, -1)
        return {'z': loc[None] + scale[None] * eps}, log_q  # [K]

    def log_likelihood(self, x, z, y=None, train=False):
        flat, logits = x.reshape(-1), self._logits(z)
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)  # Bernoulli, [K]

    def log_prior(self, z, y=None, train=False):
        scale = jnp.full(z['z'].shape, jnp.exp(self.prior_log_scale[...]))
        return normal_log_prob(z['z'], 0.0, scale)  # [K]

    def sample_prior(self, noise, y=None, train=False):
        # Optional (pictures, `vae_jax.load(...).sample`): z ~ p(z) from N(0, I) noise.
        return {'z': jnp.exp(self.prior_log_scale[...]) * noise['z']}

    def decode_mean(self, z, y=None, train=False):
        # Optional (pictures, `.sample`, `.reconstruct`): [K, M], the likelihood reads x flat.
        return jax.nn.sigmoid(self._logits(z))
