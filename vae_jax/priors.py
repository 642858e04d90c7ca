"""Priors p(z) of the built-in one-layer model: standard normal, mixture of Gaussians, VampPrior.

Config: `model.prior.name` ('standard_normal' | 'mog' | 'vamp') and
`model.prior.num_components` (K, the mixture size; unused by 'standard_normal').

- 'standard_normal': p(z) = N(0, I), no parameters.
- 'mog': p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) with learned logits, means and scales
  (softplus); the means start as N(0, I) draws so that the components differ.
- 'vamp': the VampPrior (Tomczak & Welling, 2018), p(z) = (1/K) sum_k q(z | u_k), the encoder's
  own posterior at K learned pseudo-inputs u_k. u_k = sigmoid(raw_k), so pseudo-inputs stay in
  the data's [0, 1] range with live gradients (the paper clips with a hard tanh instead).

The parameters live in the model's params (`prior/...`), so the optimizer trains them with the
rest; `make_prior` turns them into a distrax distribution, event [D], batch []. No closed-form KL
exists against the mixtures, so the ELBO uses its Monte-Carlo KL with them.
"""

from __future__ import annotations

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions

Array = jax.Array
PRIORS = ('standard_normal', 'mog', 'vamp')


class MixturePrior(nn.Module):
    """The learned parameters of a Gaussian mixture prior: K components in D dimensions."""

    num_components: int
    latent_dim: int

    @nn.compact
    def __call__(self) -> dict[str, Array]:
        """Returns {'logits': [K], 'loc': [K, D], 'raw_scale': [K, D]}."""
        shape = (self.num_components, self.latent_dim)
        return {
            'logits': self.param('logits', nn.initializers.zeros, (self.num_components,)),
            'loc': self.param('loc', nn.initializers.normal(1.0), shape),
            # softplus(0.5413) = 1: the components start with unit scales.
            'raw_scale': self.param('raw_scale', nn.initializers.constant(0.5413), shape),
        }


class PseudoInputs(nn.Module):
    """The VampPrior's K learned pseudo-inputs u [K, *data_shape] in (0, 1)."""

    num_components: int
    data_shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> Array:
        """Returns u = sigmoid(raw) [K, *data_shape]; raw starts near 0 (grey images)."""
        shape = (self.num_components, *self.data_shape)
        return jax.nn.sigmoid(self.param('raw', nn.initializers.normal(0.01), shape))


def make_prior(
    name: str,
    params: dict[str, Array],
    *,
    latent_dim: int,
    posterior: str = 'diagonal',
    scale_transform: str = 'softplus',
) -> distrax.Distribution:
    """Builds p(z) from its parameters.

    Args:
        name: 'standard_normal' | 'mog' | 'vamp'.
        params: {} for 'standard_normal'; `MixturePrior`'s dict for 'mog';
            {'posterior_params': [K, P]} (the encoder's outputs at the pseudo-inputs) for 'vamp'.
        latent_dim: D.
        posterior: the posterior family of the encoder ('vamp' builds q from its outputs).
        scale_transform: the posterior's scale transform.

    Returns:
        A distribution with event shape [D] and batch shape [].

    Raises:
        ValueError: unknown name.
    """
    if name == 'standard_normal':
        return distributions.standard_normal_prior(latent_dim)
    if name == 'mog':
        components = distrax.MultivariateNormalDiag(
            loc=params['loc'], scale_diag=jax.nn.softplus(params['raw_scale'])
        )
        return distrax.MixtureSameFamily(distrax.Categorical(logits=params['logits']), components)
    if name == 'vamp':
        components = distributions.make_posterior(
            posterior, params['posterior_params'], scale_transform=scale_transform
        )
        num = params['posterior_params'].shape[0]
        uniform = distrax.Categorical(logits=jnp.zeros((num,), jnp.float32))
        return distrax.MixtureSameFamily(uniform, components)
    raise ValueError(f'model.prior.name={name!r} is not one of {PRIORS}.')
