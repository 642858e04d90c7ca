"""Disentangling regularisers as pure functions: DIP-VAE-I/-II, AnnealedVAE, FactorVAE's TC.

Each is a term added to the negative ELBO of a batch (`loss = recon + kl + term`), so the step
computes the usual per-example terms and adds the term once per batch:
- DIP-VAE (Kumar et al. 2018): moment matching of the aggregate posterior's covariance to I,
  `dip_regularizer(mean, std, ...)` on the batch's posterior parameters.
- AnnealedVAE (Burgess et al. 2018): `loss = recon + gamma |KL - C(step)|` with the capacity C
  raised linearly from 0 to c_max (`capacity`, `annealed_kl_term`); it replaces the KL term.
- FactorVAE (Kim & Mnih 2018): `loss = recon + kl + gamma TC`, TC estimated by a discriminator
  between q(z) and the product of its marginals (`Discriminator`, `permute_dims`,
  `discriminator_loss`, `total_correlation`). The discriminator is trained by its own
  optimizer on `discriminator_loss`, with the VAE's z stopped.

Defaults are disentanglement_lib's (Locatello et al. 2019). Shapes: batch axis first.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

DIP_TYPES = ('i', 'ii')


def aggregate_covariance(mean: jax.Array, std: jax.Array | None = None) -> jax.Array:
    """Covariance of the aggregate posterior of a batch.

    Args:
      mean: [B, D] posterior means.
      std: [B, D] posterior standard deviations (diagonal Gaussian q), or None.

    Returns:
      [D, D]: Cov_batch[mean] (biased, divided by B) when std is None (DIP-VAE-I's moment);
      plus diag(mean over the batch of std^2) otherwise, which is Cov_q(z) of the mixture
      (1/B) sum_b N(mean_b, diag(std_b^2)) (DIP-VAE-II's).
    """
    centred = mean - jnp.mean(mean, axis=0, keepdims=True)
    cov = centred.T @ centred / mean.shape[0]
    if std is not None:
        cov = cov + jnp.diag(jnp.mean(std**2, axis=0))
    return cov


def dip_regularizer(
    mean: jax.Array,
    std: jax.Array | None = None,
    *,
    dip_type: str = 'i',
    lambda_od: float = 10.0,
    lambda_d: float | None = None,
) -> jax.Array:
    """DIP-VAE regulariser: lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2.

    C is `aggregate_covariance(mean)` for DIP-VAE-I and `aggregate_covariance(mean, std)` for
    DIP-VAE-II. Zero exactly when C = I.

    Args:
      mean: [B, D] posterior means of the batch.
      std: [B, D] posterior standard deviations; needed for dip_type 'ii'.
      dip_type: 'i' | 'ii'.
      lambda_od: off-diagonal weight (disentanglement_lib's default 10; may be traced).
      lambda_d: diagonal weight; None: 10 lambda_od for 'i', lambda_od for 'ii' (Kumar et al.'s
        and disentanglement_lib's choice).

    Returns:
      [] the penalty to add to the batch's loss.

    Raises:
      ValueError: an unknown dip_type, or 'ii' without std, or mismatched shapes.

    References: Kumar, Sattigeri & Balakrishnan (2018), ICLR; Locatello et al. (2019).
    """
    if dip_type not in DIP_TYPES:
        raise ValueError(
            f'dip_type={dip_type!r} is not supported; allowed: {", ".join(DIP_TYPES)}.'
        )
    if dip_type == 'ii' and std is None:
        raise ValueError("dip_type='ii' needs the posterior std [B, D].")
    if std is not None and std.shape != mean.shape:
        raise ValueError(f'mean {mean.shape} and std {std.shape} must have the same shape [B, D].')
    if lambda_d is None:
        lambda_d = 10.0 * lambda_od if dip_type == 'i' else lambda_od
    cov = aggregate_covariance(mean, std if dip_type == 'ii' else None)
    diag = jnp.diag(cov)
    off_diag = cov - jnp.diag(diag)
    return lambda_od * jnp.sum(off_diag**2) + lambda_d * jnp.sum((diag - 1.0) ** 2)


def capacity(step: jax.Array, *, c_max: float = 25.0, num_steps: int = 100_000) -> jax.Array:
    """AnnealedVAE's KL capacity C(step) = c_max min(1, step / num_steps), in nats.

    Args:
      step: [] the optimizer step (int or float; may be traced).
      c_max: the final capacity (disentanglement_lib's default 25 nats).
      num_steps: steps over which C rises (disentanglement_lib's iteration_threshold, 100,000);
        0 means C = c_max from the start.

    Returns:
      [] float32.

    References: Burgess et al. (2018), Understanding disentangling in beta-VAE.
    """
    if num_steps <= 0:
        return jnp.asarray(c_max, jnp.float32)
    fraction = jnp.minimum(jnp.asarray(step, jnp.float32) / num_steps, 1.0)
    return jnp.asarray(c_max, jnp.float32) * fraction


def annealed_kl_term(kl: jax.Array, capacity_value: jax.Array, *, gamma: float = 1000.0):
    """AnnealedVAE's replacement of the KL term: gamma |KL - C|.

    Args:
      kl: [] or [B] KL(q(z|x) || p(z)) per example.
      capacity_value: [] C from `capacity`.
      gamma: weight (disentanglement_lib's default 1000).

    Returns:
      Same shape as kl.

    References: Burgess et al. (2018).
    """
    return gamma * jnp.abs(kl - capacity_value)


class Discriminator(nn.Module):
    """FactorVAE's discriminator: z [B, D] -> logits [B, 2] (class 0: q(z), 1: prod_j q(z_j)).

    Kim & Mnih (2018) and disentanglement_lib: 6 hidden layers of 1000 units, leaky ReLU 0.2.
    """

    hidden: tuple[int, ...] = (1000,) * 6
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for width in self.hidden:
            h = nn.leaky_relu(nn.Dense(width)(h), self.negative_slope)
        return nn.Dense(2)(h)


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
    """Each latent dimension permuted independently across the batch: a sample of prod_j q(z_j).

    Args:
      key: consumed once.
      z: [B, D].

    Returns:
      [B, D].

    References: Kim & Mnih (2018), Algorithm 1.
    """
    keys = jax.random.split(key, z.shape[1])
    return jax.vmap(
        lambda k, column: jax.random.permutation(k, column), in_axes=(0, 1), out_axes=1
    )(keys, z)


def total_correlation(logits: jax.Array) -> jax.Array:
    """Density-ratio estimate of TC(z) = KL(q(z) || prod_j q(z_j)) from logits of samples of q(z).

    With an optimal discriminator, logit_0 - logit_1 = log q(z) / prod_j q(z_j), so its mean
    over samples of q(z) estimates the KL.

    Args:
      logits: [B, 2] discriminator logits of z ~ q(z) (not permuted).

    Returns:
      [] nats.

    References: Kim & Mnih (2018), eq. (3); Sugiyama et al. (2012), density ratio trick.
    """
    return jnp.mean(logits[:, 0] - logits[:, 1])


def discriminator_loss(logits_q: jax.Array, logits_permuted: jax.Array) -> jax.Array:
    """The discriminator's cross-entropy: class 0 for q(z) samples, class 1 for permuted ones.

    Args:
      logits_q: [B, 2] logits of z ~ q(z) (stop the VAE's gradient before the discriminator).
      logits_permuted: [B, 2] logits of `permute_dims` of an independent batch.

    Returns:
      [] 0.5 (CE(q, 0) + CE(permuted, 1)), averaged over each batch.

    References: Kim & Mnih (2018), Algorithm 1.
    """
    zeros = jnp.zeros(logits_q.shape[:1], jnp.int32)
    ones = jnp.ones(logits_permuted.shape[:1], jnp.int32)
    ce_q = optax.softmax_cross_entropy_with_integer_labels(logits_q, zeros)
    ce_p = optax.softmax_cross_entropy_with_integer_labels(logits_permuted, ones)
    return 0.5 * (jnp.mean(ce_q) + jnp.mean(ce_p))
