"""The IWAE paper's model with two stochastic layers (Burda, Grosse & Salakhutdinov, 2016).

    q(z1 | x):  x  -> 200 -> 200 -> Gaussian z1 [100]      p(z2) = N(0, I)
    q(z2 | z1): z1 -> 100 -> 100 -> Gaussian z2 [50]       p(z1 | z2): z2 -> 100 -> 100 -> z1
                                                           p(x | z1):  z1 -> 200 -> 200 -> x
with tanh hidden units, diagonal Gaussians whose scales are exp of a linear output, and a
Bernoulli likelihood over the flattened data. The sizes are attributes, so other depths of MLP
fit too. `TwoLayerVAE` follows the model protocol (`models.LatentVariableModel`), with its
optional `sample_prior` and `decode_mean` (so `vae_jax.load(workdir).sample` works for its runs);
a config names it as `model.module='vae_jax.two_layer:TwoLayerVAE'` (configs/iwae_mnist_2layer.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import layers

Array = jax.Array
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(z: Array, loc: Array, scale: Array) -> Array:
    """log N(z; loc, diag(scale^2)) summed over the last axis: [..., D] -> [...]."""
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI, -1)


def gaussian_log_prob_of_noise(eps: Array, scale: Array) -> Array:
    """log N(loc + scale * eps; loc, diag(scale^2)) from the noise: [..., D] -> [...].

    Equals `gaussian_log_prob(loc + scale * eps, loc, scale)` (to float rounding) without loc;
    scale has eps's rank (broadcast [1, D] against [K, D]).
    """
    return jnp.sum(-0.5 * jnp.square(eps) - jnp.log(scale) - _HALF_LOG_2PI, -1)


class MLP(nn.Module):
    """Dense layers with an activation between them, then a Dense output of `num_outputs`."""

    hidden_dims: Sequence[int]
    activation: str = 'tanh'

    @nn.compact
    def __call__(self, h: Array, num_outputs: int) -> Array:
        """Args: h: [..., F]. num_outputs: width of the last layer. Returns: [..., num_outputs]."""
        act = layers.ACTIVATIONS[self.activation]
        for width in self.hidden_dims:
            h = act(nn.Dense(width)(h))
        return nn.Dense(num_outputs)(h)

    def output_width(self) -> int:
        """num_outputs of the created output layer (bound, initialised modules only).

        Raises:
          ValueError: the output layer has no parameters yet (the MLP was never called).
        """
        name = f'Dense_{len(self.hidden_dims)}'
        params = self.variables.get('params', {})
        if name not in params:
            raise ValueError(
                f'{self.name}.output_width: the MLP has no output layer {name!r} yet; call it '
                '(or initialise the model) first.'
            )
        return int(params[name]['kernel'].shape[-1])


class TwoLayerVAE(nn.Module):
    """Two stochastic layers z1 [D1], z2 [D2]: p(x|z1) p(z1|z2) p(z2) and q(z1|x) q(z2|z1).

    Has the protocol's optional `sample_and_log_posterior`, so reparameterised objectives run
    each encoder once per step (`log_posterior` stays for STL and DReG).

    Attributes:
      latent_dims: (D1, D2).
      encoder_dims: hidden widths of q(z1|x) and of q(z2|z1).
      decoder_dims: hidden widths of p(z1|z2) and of p(x|z1).
      activation: a name in `layers.ACTIVATIONS`.
    """

    latent_dims: tuple[int, int] = (100, 50)
    encoder_dims: tuple[tuple[int, ...], tuple[int, ...]] = ((200, 200), (100, 100))
    decoder_dims: tuple[tuple[int, ...], tuple[int, ...]] = ((100, 100), (200, 200))
    activation: str = 'tanh'

    def setup(self):
        self.q_z1 = MLP(tuple(self.encoder_dims[0]), self.activation)
        self.q_z2 = MLP(tuple(self.encoder_dims[1]), self.activation)
        self.p_z1 = MLP(tuple(self.decoder_dims[0]), self.activation)
        self.p_x = MLP(tuple(self.decoder_dims[1]), self.activation)

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        return {'z1': (int(self.latent_dims[0]),), 'z2': (int(self.latent_dims[1]),)}

    def _gaussian(self, net: MLP, h: Array, dim: int) -> tuple[Array, Array]:
        out = net(h, 2 * dim)
        return out[..., :dim], jnp.exp(out[..., dim:])

    def _draw(self, x: Array, noise: dict) -> tuple[dict, Array, Array]:
        """(z, scale1 [1, D1], scale2 [K, D2]): the sample and the scales that drew it."""
        d1, d2 = self.latent_dims
        loc1, scale1 = self._gaussian(self.q_z1, x.reshape(-1), d1)  # [D1]
        z1 = loc1[None] + scale1[None] * noise['z1']  # [K, D1]
        loc2, scale2 = self._gaussian(self.q_z2, z1, d2)  # [K, D2]
        return {'z1': z1, 'z2': loc2 + scale2 * noise['z2']}, scale1[None], scale2

    def sample_posterior(self, x: Array, noise: dict, y=None, train: bool = False) -> dict:
        """noise {'z1': [K, D1], 'z2': [K, D2]} ~ N(0, I) -> z1 ~ q(z1|x), z2 ~ q(z2|z1)."""
        return self._draw(x, noise)[0]

    def sample_and_log_posterior(
        self, x: Array, noise: dict, y=None, train: bool = False
    ) -> tuple[dict, Array]:
        """(`sample_posterior`'s z, [K] log q(z1|x) + log q(z2|z1)) from one encoder pass."""
        z, scale1, scale2 = self._draw(x, noise)
        log_q = gaussian_log_prob_of_noise(noise['z1'], scale1) + gaussian_log_prob_of_noise(
            noise['z2'], scale2
        )
        return z, log_q

    def log_posterior(self, x: Array, z: dict, y=None, train: bool = False) -> Array:
        """[K] log q(z1|x) + log q(z2|z1)."""
        d1, d2 = self.latent_dims
        loc1, scale1 = self._gaussian(self.q_z1, x.reshape(-1), d1)
        loc2, scale2 = self._gaussian(self.q_z2, z['z1'], d2)
        return gaussian_log_prob(z['z1'], loc1[None], scale1[None]) + gaussian_log_prob(
            z['z2'], loc2, scale2
        )

    def log_likelihood(self, x: Array, z: dict, y=None, train: bool = False) -> Array:
        """[K] log p(x|z1), Bernoulli over the flattened x (values in {0, 1})."""
        flat = x.reshape(-1)
        logits = self.p_x(z['z1'], flat.shape[0])  # [K, M]
        # x l - softplus(l) = log sigmoid-Bernoulli, stable for any logit.
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)

    def log_prior(self, z: dict, y=None, train: bool = False) -> Array:
        """[K] log p(z2) + log p(z1|z2), p(z2) = N(0, I)."""
        loc1, scale1 = self._gaussian(self.p_z1, z['z2'], self.latent_dims[0])
        z2 = z['z2']
        return gaussian_log_prob(z['z1'], loc1, scale1) + gaussian_log_prob(
            z2, jnp.zeros_like(z2), jnp.ones_like(z2)
        )

    # Optional protocol members (`vae_jax.load(...).sample` and `.reconstruct` use them).

    def sample_prior(self, noise: dict, y=None, train: bool = False) -> dict:
        """Ancestral draws from p(z1|z2) p(z2): noise {'z1': [K, D1], 'z2': [K, D2]} ~ N(0, I).

        z2 = noise['z2'] ~ N(0, I), then z1 = loc(z2) + scale(z2) * noise['z1'] ~ p(z1|z2);
        returns {'z1': [K, D1], 'z2': [K, D2]}.
        """
        z2 = noise['z2']
        loc1, scale1 = self._gaussian(self.p_z1, z2, self.latent_dims[0])
        return {'z1': loc1 + scale1 * noise['z1'], 'z2': z2}

    def decode_mean(self, z: dict, y=None, train: bool = False) -> Array:
        """[K, M] the mean of p(x|z1), sigmoid of the Bernoulli logits, over the flattened x."""
        return jax.nn.sigmoid(self.p_x(z['z1'], self.p_x.output_width()))

    def __call__(self, x: Array, y=None, *, train: bool = False) -> Array:
        """log w of one zero-noise sample, [1]; lets `model.init(key, x)` create every parameter."""
        noise = {
            name: jnp.zeros((1, *shape), x.dtype) for name, shape in self.latent_shapes.items()
        }
        z = self.sample_posterior(x, noise)
        return self.log_likelihood(x, z) + self.log_prior(z) - self.log_posterior(x, z)
