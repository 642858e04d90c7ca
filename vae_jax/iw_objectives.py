"""The importance-weighted family beyond IWAE, over a `LatentModel`: MIWAE, CIWAE and PIWAE.

The bounds are pure functions of log-weights (`vae_jax.bounds`); these apply them to one
example's model, with the signature of a per-example objective (`registry.Objective`):
`fn(key, model, **options) -> dict of []`. `OBJECTIVES` declares them, with their options, for
the registry (`vae_jax.objectives`), under the config names 'miwae', 'ciwae' and 'piwae'.

log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), as in `log_weights.model_iwae`;
gradients are reparameterised ('reparam'; STL and DReG are defined for IWAE, not for these
groupings, and raise). Each returns 'loss' (the negative objective), 'bound' (its value at
beta = 1), 'iwae' (IWAE-K over all K samples at beta = 1), 'elbo', 'recon', 'kl' and 'ess', the
effective sample size of the K importance weights (in [1, K]).

References: Rainforth et al., 2018 ("Tighter variational bounds are not necessarily better").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vae_jax import bounds, log_weights, registry

Array = jax.Array


def _check_reparam(estimator: str, objective: str) -> None:
    if estimator != 'reparam':
        raise ValueError(
            f'gradient_estimator={estimator!r} is not defined for objective={objective!r}; '
            "allowed: 'reparam'."
        )


def _log_terms(key: Array, model: log_weights.LatentModel, k_samples: int):
    """z ~ q (K draws), (log p(x|z) [K], log p(z) [K], log q(z|x) [K]).

    z and log q come from one pass when the model has `sample_and_log_q` (reparameterised
    gradients only here, so log q is always taken with live parameters).
    """
    z, log_qz = log_weights.sample_with_log_q(key, model, k_samples)
    return z, model.log_likelihood(z), model.log_prior(z), log_qz


def _report(log_px: Array, log_pz: Array, log_qz: Array) -> dict[str, Array]:
    """The beta = 1 diagnostics of one example's K samples (values only, no gradients)."""
    log_px, log_pz, log_qz = jax.lax.stop_gradient((log_px, log_pz, log_qz))
    log_w = log_px + log_pz - log_qz
    return {
        'iwae': bounds.iwae_bound(log_w),
        'elbo': bounds.elbo_bound(log_w),
        'recon': -jnp.mean(log_px),
        'kl': jnp.mean(log_qz - log_pz),
        'ess': bounds.ess(log_w),
    }


def model_miwae(
    key: Array,
    model: log_weights.LatentModel,
    *,
    beta: float | Array = 1.0,
    k_samples: int = 1,
    miwae_m: int = 1,
    estimator: str = 'reparam',
) -> dict[str, Array]:
    """Negative MIWAE(M, K / M) bound of one example: k_samples draws in M groups.

    Args:
        key: PRNG key, consumed once.
        model: one example's model.
        beta: weight on log p(z) - log q(z|x) (may be traced).
        k_samples: total samples M * (K / M) (static).
        miwae_m: M, the number of groups (static), dividing k_samples.
        estimator: 'reparam' only.

    Returns:
        {'loss', 'bound', 'iwae', 'elbo', 'recon', 'kl', 'ess'}, all [].

    Raises:
        ValueError: M does not divide k_samples; another estimator.

    References: Rainforth et al., 2018.
    """
    _check_reparam(estimator, 'miwae')
    if miwae_m < 1 or k_samples % miwae_m:
        raise ValueError(
            f'miwae_m={miwae_m} must be >= 1 and divide k_samples={k_samples} (the total number '
            'of samples, M groups of k_samples / M).'
        )
    _, log_px, log_pz, log_qz = _log_terms(key, model, k_samples)
    groups = (miwae_m, k_samples // miwae_m)
    bound_beta = bounds.miwae((log_px + beta * (log_pz - log_qz)).reshape(groups))
    report = _report(log_px, log_pz, log_qz)
    bound = bounds.miwae((log_px + log_pz - log_qz).reshape(groups))
    return {'loss': -bound_beta, 'bound': jax.lax.stop_gradient(bound), **report}


def model_ciwae(
    key: Array,
    model: log_weights.LatentModel,
    *,
    beta: float | Array = 1.0,
    k_samples: int = 1,
    ciwae_beta: float | Array = 0.5,
    estimator: str = 'reparam',
) -> dict[str, Array]:
    """Negative CIWAE bound of one example: ciwae_beta * ELBO + (1 - ciwae_beta) * IWAE-K.

    Args:
        key: PRNG key, consumed once.
        model: one example's model.
        beta: weight on log p(z) - log q(z|x) (may be traced).
        k_samples: K (static).
        ciwae_beta: the ELBO's weight in [0, 1] (may be traced): 1 is the K-sample ELBO, 0 IWAE.
        estimator: 'reparam' only.

    Returns:
        {'loss', 'bound', 'iwae', 'elbo', 'recon', 'kl', 'ess'}, all [].

    References: Rainforth et al., 2018.
    """
    _check_reparam(estimator, 'ciwae')
    _, log_px, log_pz, log_qz = _log_terms(key, model, k_samples)
    bound_beta = bounds.ciwae(log_px + beta * (log_pz - log_qz), ciwae_beta)
    report = _report(log_px, log_pz, log_qz)
    bound = bounds.ciwae(jax.lax.stop_gradient(log_px + log_pz - log_qz), ciwae_beta)
    return {'loss': -bound_beta, 'bound': bound, **report}


def model_piwae(
    key: Array,
    model: log_weights.LatentModel,
    *,
    beta: float | Array = 1.0,
    k_samples: int = 1,
    piwae_m: int = 1,
    estimator: str = 'reparam',
) -> dict[str, Array]:
    """PIWAE for one example: IWAE-K for the generative model, MIWAE(K/M, M) for the encoder.

    One draw of K samples. The loss VALUE is -IWAE-K; its GRADIENT is routed without knowing
    which parameters are which, from the structure of log w = f_theta(z) - log q_phi(z),
    z = z_phi(eps), with f = log p(x|z) + beta log p(z) (generative parameters theta) and
    c_enc, c_dec = d objective / d log w (stopped weights):

        S = sum_k c_enc_k log w_k + sum_k (c_dec_k - c_enc_k) f_theta(sg(z_k))

    theta reaches S through both terms: c_enc + (c_dec - c_enc) = c_dec, the IWAE-K gradient.
    phi reaches S only through the first (z and log q): c_enc, the MIWAE gradient. The second
    term evaluates the decoder at the same values again; its forward equals the first's, so
    XLA's common-subexpression elimination can share it. Parameters that shape both q and p
    (the encoder inside a VampPrior) get the decoder's weights on the prior path.

    Args:
        key: PRNG key, consumed once.
        model: one example's model.
        beta: weight on log p(z) - log q(z|x) (may be traced).
        k_samples: K (static).
        piwae_m: M, the encoder's IWAE group size (static), dividing K.
        estimator: 'reparam' only.

    Returns:
        {'loss': -IWAE-K (PIWAE gradients), 'bound': IWAE-K, 'encoder_bound': MIWAE(K/M, M),
         'iwae', 'elbo', 'recon', 'kl', 'ess'}, all [] (at beta = 1 except 'loss').

    Raises:
        ValueError: M does not divide K; another estimator.

    References: Rainforth et al., 2018.
    """
    _check_reparam(estimator, 'piwae')
    z, log_px, log_pz, log_qz = _log_terms(key, model, k_samples)
    log_w = log_px + beta * (log_pz - log_qz)
    encoder_weights = jax.grad(lambda lw: bounds.piwae(lw, piwae_m)[0])
    c_enc = jax.lax.stop_gradient(encoder_weights(log_w))  # d MIWAE / d log w
    c_dec = jax.lax.stop_gradient(jax.nn.softmax(log_w))  # d IWAE-K / d log w
    z_stopped = jax.lax.stop_gradient(z)
    f_stopped = model.log_likelihood(z_stopped) + beta * model.log_prior(z_stopped)
    surrogate = jnp.sum(c_enc * log_w) + jnp.sum((c_dec - c_enc) * f_stopped)
    encoder_bound, bound_beta = jax.lax.stop_gradient(bounds.piwae(log_w, piwae_m))
    loss = -(bound_beta + surrogate - jax.lax.stop_gradient(surrogate))
    report = _report(log_px, log_pz, log_qz)
    enc, dec = bounds.piwae(jax.lax.stop_gradient(log_px + log_pz - log_qz), piwae_m)
    return {'loss': loss, 'bound': dec, 'encoder_bound': enc, **report}


# ---------------------------------------------------------------------------------------------
# Registry declarations (vae_jax.objectives).

MIWAE_M = registry.integer(
    'miwae_m', 'miwae_m', 1, 1, 'M groups of k_samples / M samples (M divides k_samples; static)'
)
CIWAE_BETA = registry.number(
    'ciwae_beta',
    'ciwae_beta',
    0.5,
    lambda v: 0 <= v <= 1,
    'a number in [0, 1]',
    'weight of the ELBO in ciwae_beta * ELBO + (1 - ciwae_beta) * IWAE',
)
PIWAE_M = registry.integer(
    'piwae_m', 'piwae_m', 1, 1, "the encoder's IWAE group size M (divides k_samples; static)"
)


def _must_divide_k(key: str, objective: str):
    """A check that config[key] divides config.k_samples."""

    def check(config: Any) -> None:
        if config.k_samples % config[key]:
            raise ValueError(
                f'config.{key}={config[key]} must divide config.k_samples={config.k_samples} '
                f'(objective {objective!r}); allowed: a divisor of {config.k_samples}'
            )

    return check


OBJECTIVES = (
    registry.Objective(
        'miwae',
        model_miwae,
        (log_weights.K_SAMPLES, MIWAE_M),
        check=_must_divide_k('miwae_m', 'miwae'),
        doc='negative MIWAE(M, K / M): the mean of M IWAE bounds of K / M samples each',
    ),
    registry.Objective(
        'ciwae',
        model_ciwae,
        (log_weights.K_SAMPLES, CIWAE_BETA),
        doc='negative CIWAE: ciwae_beta * ELBO + (1 - ciwae_beta) * IWAE-K on the same draws',
    ),
    registry.Objective(
        'piwae',
        model_piwae,
        (log_weights.K_SAMPLES, PIWAE_M),
        check=_must_divide_k('piwae_m', 'piwae'),
        doc='PIWAE: IWAE-K for the generative model, MIWAE(K / M, M) for the encoder',
    ),
)
