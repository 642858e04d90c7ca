"""DIP-VAE-I, DIP-VAE-II and AnnealedVAE as registered objectives (batch-level).

Each starts from the per-example ELBO terms of `log_weights.model_elbo` (one sample; the
analytic KL where a closed form exists, else its one-sample Monte-Carlo estimate) and adds a
term of the whole batch, so both are batch-level `registry.Objective`s:

- 'dip_vae_i' / 'dip_vae_ii' (Kumar et al. 2018): loss = recon + beta KL + R, with
  R = lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2 and C the covariance of the
  aggregate posterior estimated from the batch: the covariance of the posterior means (I), plus
  the mean posterior variance on its diagonal (II) (`disentangle_objectives.dip_regularizer`).
  lambda_d = lambda_d_factor * lambda_od, as disentanglement_lib parameterises it. beta = 1 (the
  default) is the published objective.
- 'annealed_vae' (Burgess et al. 2018): loss = recon + gamma |KL - C(step)|, KL the batch mean
  (as in disentanglement_lib: the absolute value of the batch's mean KL, not the mean of the
  per-example absolute values), C(step) = c_max min(1, step / num_steps)
  (`disentangle_objectives.capacity`); it replaces the KL term, so `beta` is not read.

The batch term is added to every example's loss, so the step's batch mean of 'loss' is the
objective above. DIP-VAE needs q's mean (and, for II, its diagonal variance): the one-layer
capability (`protocol.Capabilities.distributions`; the built-in VAE has it), checked when the
step configuration is built. AnnealedVAE needs only the KL, so it runs with any model.

Defaults: disentanglement_lib's unsupervised study (Locatello et al. 2019): AnnealedVAE
gamma = 1000, c_max = 25 nats (its sweep's middle value), iteration threshold 100,000 steps;
DIP-VAE lambda_d_factor 10 (I) and 1 (II). disentanglement_lib has no default for lambda_od
(gin.REQUIRED; its study sweeps 1, 2, 5, 10, 20, 50 for both variants): we take 10 for both,
which for DIP-VAE-I gives Kumar et al.'s lambda_od = 10, lambda_d = 100.

References: Kumar, Sattigeri & Balakrishnan (2018), ICLR; Burgess et al. (2018), Understanding
disentangling in beta-VAE; Locatello et al. (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from vae_jax import disentangle_objectives, log_weights, registry

Bind = Callable[[jax.Array, jax.Array | None], log_weights.LatentModel]


def _elbo_terms(keys, bind, images, labels, *, with_posterior: bool, name: str):
    """Per-example ELBO terms over the batch, and q's mean and stddev when asked ([B, D])."""

    def one(key, x, y):
        model = bind(x, y)
        terms = log_weights.model_elbo(key, model)
        if not with_posterior:
            return terms, ()
        if model.one_layer is None:
            raise ValueError(
                f'objective={name!r} needs the posterior mean of one latent vector: the '
                'one-layer capability (posterior_distribution, likelihood_distribution and '
                'prior_distribution; the built-in VAE has it).'
            )
        q = model.one_layer.q
        if name == 'dip_vae_ii' and not isinstance(q, distrax.MultivariateNormalDiag):
            raise ValueError(
                "objective='dip_vae_ii' needs a diagonal Gaussian posterior "
                f"(model.posterior='diagonal'); got {type(q).__name__}."
            )
        std = q.stddev() if name == 'dip_vae_ii' else jnp.zeros_like(q.mean())
        return terms, (q.mean(), std)

    labels_in = labels if labels is not None else jnp.zeros(images.shape[:1], jnp.int32)
    return jax.vmap(one, axis_name='batch')(keys, images, labels_in)


def _dip(name: str, dip_type: str):
    def model_dip_vae(
        keys: jax.Array,
        bind: Bind,
        images: jax.Array,
        labels: jax.Array | None,
        *,
        beta: float | jax.Array = 1.0,
        dip_lambda_od: float = 10.0,
        lambda_d_factor: float = 10.0 if dip_type == 'i' else 1.0,
    ) -> dict[str, jax.Array]:
        terms, (mean, std) = _elbo_terms(keys, bind, images, labels, with_posterior=True, name=name)
        penalty = disentangle_objectives.dip_regularizer(
            mean,
            std if dip_type == 'ii' else None,
            dip_type=dip_type,
            lambda_od=dip_lambda_od,
            lambda_d=lambda_d_factor * dip_lambda_od,
        )
        recon, kl = terms['recon'], terms['kl']
        dip = jnp.broadcast_to(penalty, recon.shape)
        return {
            'loss': recon + beta * kl + dip,
            'recon': recon,
            'kl': kl,
            'elbo': terms['elbo'],
            'dip': dip,
        }

    model_dip_vae.__name__ = f'model_{name}'
    model_dip_vae.__doc__ = f"""Negative DIP-VAE-{dip_type.upper()} terms of a batch, per example.

    Args:
        keys: [B] one key per example.
        bind: (x, y) -> one example's model, with the one-layer capability{
        ' and a diagonal Gaussian posterior' if dip_type == 'ii' else ''
    }.
        images: [B, *event] the (binarised) batch.
        labels: [B] int labels (or None).
        beta: the KL weight (may be traced); 1 is the published objective.
        dip_lambda_od: the off-diagonal weight lambda_od.
        lambda_d_factor: lambda_d = lambda_d_factor * lambda_od.

    Returns:
        {{'loss': recon + beta kl + dip, 'recon', 'kl', 'elbo', 'dip': the batch's regulariser
         (the same value in every row)}}, each [B].

    Raises:
        ValueError: a model without the one-layer capability (or, for II, a posterior that is
            not a diagonal Gaussian).

    References: Kumar, Sattigeri & Balakrishnan (2018).
    """
    return model_dip_vae


model_dip_vae_i = _dip('dip_vae_i', 'i')
model_dip_vae_ii = _dip('dip_vae_ii', 'ii')


def model_annealed_vae(
    keys: jax.Array,
    bind: Bind,
    images: jax.Array,
    labels: jax.Array | None,
    *,
    step: jax.Array | int = 0,
    annealed_gamma: float = 1000.0,
    annealed_c_max: float = 25.0,
    annealed_capacity_steps: int = 100_000,
) -> dict[str, jax.Array]:
    """Negative AnnealedVAE terms of a batch, per example: recon + gamma |mean KL - C(step)|.

    Args:
        keys: [B] one key per example.
        bind: (x, y) -> one example's model (any model: only its KL is used).
        images: [B, *event] the (binarised) batch.
        labels: [B] int labels (or None).
        step: [] the optimizer step (may be traced): C(step) = c_max min(1, step / num_steps).
        annealed_gamma: gamma.
        annealed_c_max: the final capacity C, nats.
        annealed_capacity_steps: steps over which C rises from 0 (0: c_max from the start).

    Returns:
        {'loss', 'recon', 'kl', 'elbo', 'capacity': C(step) (the same value in every row)},
        each [B]; the batch mean of 'loss' is mean recon + gamma |mean kl - C|.

    References: Burgess et al. (2018).
    """
    terms, _ = _elbo_terms(keys, bind, images, labels, with_posterior=False, name='annealed_vae')
    recon, kl = terms['recon'], terms['kl']
    c = disentangle_objectives.capacity(
        step, c_max=annealed_c_max, num_steps=annealed_capacity_steps
    )
    # The capacity term is of the batch's mean KL (disentanglement_lib); added to every row.
    gap = disentangle_objectives.annealed_kl_term(jnp.mean(kl), c, gamma=annealed_gamma)
    return {
        'loss': recon + gap,
        'recon': recon,
        'kl': kl,
        'elbo': terms['elbo'],
        'capacity': jnp.broadcast_to(c, recon.shape),
    }


# ---------------------------------------------------------------------------------------------
# Registry declarations (vae_jax.objectives).

_POSITIVE = (lambda v: v >= 0, 'a finite number >= 0')

DIP_LAMBDA_OD = registry.number(
    'dip_lambda_od',
    'dip_lambda_od',
    10.0,
    *_POSITIVE,
    'DIP-VAE: weight lambda_od on the squared off-diagonal aggregate covariance',
    exclusive=True,
)
DIP_I_LAMBDA_D_FACTOR = registry.number(
    'lambda_d_factor',
    'dip_i_lambda_d_factor',
    10.0,
    *_POSITIVE,
    'DIP-VAE-I: lambda_d = this * lambda_od, the weight on (diagonal - 1)^2',
    exclusive=True,
)
DIP_II_LAMBDA_D_FACTOR = registry.number(
    'lambda_d_factor',
    'dip_ii_lambda_d_factor',
    1.0,
    *_POSITIVE,
    'DIP-VAE-II: lambda_d = this * lambda_od, the weight on (diagonal - 1)^2',
    exclusive=True,
)
ANNEALED_GAMMA = registry.number(
    'annealed_gamma',
    'annealed_gamma',
    1000.0,
    *_POSITIVE,
    'AnnealedVAE: weight gamma on |KL - C|',
    exclusive=True,
)
ANNEALED_C_MAX = registry.number(
    'annealed_c_max',
    'annealed_c_max',
    25.0,
    *_POSITIVE,
    'AnnealedVAE: the final KL capacity C (nats)',
    exclusive=True,
)
ANNEALED_CAPACITY_STEPS = registry.integer(
    'annealed_capacity_steps',
    'annealed_capacity_steps',
    100_000,
    0,
    'AnnealedVAE: steps over which C rises linearly from 0 to c_max (0: c_max throughout)',
    exclusive=True,
)


def _check_dip(name: str):
    def check(config: Any) -> None:
        if config.input.batch_size < 2:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size}: {name} estimates the '
                "aggregate posterior's covariance from the batch; allowed: >= 2"
            )
        if name == 'dip_vae_ii' and config.model.module is None:
            if config.model.posterior != 'diagonal':
                raise ValueError(
                    f'config.model.posterior={config.model.posterior!r}: dip_vae_ii needs the '
                    "posterior's variances (a diagonal Gaussian); allowed: 'diagonal'"
                )

    return check


OBJECTIVES = (
    registry.Objective(
        'dip_vae_i',
        model_dip_vae_i,
        (DIP_LAMBDA_OD, DIP_I_LAMBDA_D_FACTOR),
        per_example=False,
        check=_check_dip('dip_vae_i'),
        capabilities=('distributions',),
        doc='negative DIP-VAE-I: recon + beta KL + moment matching of Cov[posterior means] to I '
        '(Kumar et al. 2018)',
    ),
    registry.Objective(
        'dip_vae_ii',
        model_dip_vae_ii,
        (DIP_LAMBDA_OD, DIP_II_LAMBDA_D_FACTOR),
        per_example=False,
        check=_check_dip('dip_vae_ii'),
        capabilities=('distributions',),
        doc='negative DIP-VAE-II: recon + beta KL + moment matching of the aggregate '
        "posterior's covariance to I (Kumar et al. 2018)",
    ),
    registry.Objective(
        'annealed_vae',
        model_annealed_vae,
        (ANNEALED_GAMMA, ANNEALED_C_MAX, ANNEALED_CAPACITY_STEPS),
        per_example=False,
        inputs=('step',),
        doc='negative AnnealedVAE: recon + gamma |KL - C(step)|, C linear 0 -> c_max '
        '(Burgess et al. 2018)',
    ),
)
