"""The model zoo's objectives over a `losses.LatentModel`: MIWAE, CIWAE, PIWAE and beta-TCVAE.

They are the `bounds` (pure functions of log-weights) and `tcvae` (the batch-level
decomposition) applied to a model, in the two signatures the train step runs
(`losses.Objective`): per-example `fn(key, model, **options) -> dict of []` for the IWAE family,
batch-level `fn(keys [B], bind, images, labels, **options) -> dict of [B]` for beta-TCVAE.
`losses.get_model_objective` finds them by their config names ('miwae', 'ciwae', 'piwae',
'beta_tcvae').

For the IWAE family log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), as in
`losses.model_iwae`; gradients are reparameterised ('reparam'; STL and DReG are defined for
IWAE, not for these groupings, and raise). Each returns 'loss' (the negative objective), 'bound'
(its value at beta = 1), 'iwae' (IWAE-K over all K samples at beta = 1), 'elbo', 'recon', 'kl'
and 'ess', the effective sample size of the K importance weights (in [1, K]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from vae_jax import bounds, losses, tcvae

Array = jax.Array


def _check_reparam(estimator: str, objective: str) -> None:
    if estimator != 'reparam':
        raise ValueError(
            f'gradient_estimator={estimator!r} is not defined for objective={objective!r}; '
            "allowed: 'reparam'."
        )


def _log_terms(key: Array, model: losses.LatentModel, k_samples: int):
    """z ~ q (K draws), (log p(x|z) [K], log p(z) [K], log q(z|x) [K]).

    z and log q come from one pass when the model has `sample_and_log_q` (reparameterised
    gradients only here, so log q is always taken with live parameters).
    """
    z, log_qz = losses.sample_with_log_q(key, model, k_samples)
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
    model: losses.LatentModel,
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
    model: losses.LatentModel,
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
    model: losses.LatentModel,
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


def model_beta_tcvae(
    keys: Array,
    bind: Callable[[Array, Array | None], losses.LatentModel],
    images: Array,
    labels: Array | None,
    *,
    beta: float | Array = 1.0,
    tcvae_alpha: float | Array = 1.0,
    tcvae_gamma: float | Array = 1.0,
    tcvae_estimator: str = 'mws',
    dataset_size: int = 0,
) -> dict[str, Array]:
    """beta-TCVAE terms of a batch (one sample per example), per example.

    The aggregate-posterior estimates use every example of the batch (`tcvae.decompose`);
    'loss'_i = recon_i + alpha MI_i + beta TC_i + gamma DWKL_i, whose batch mean is the
    objective of `tcvae.tcvae`.

    Args:
        keys: [B] one key per example.
        bind: (x, y) -> one example's model; it must be one stochastic layer with a diagonal
            Gaussian posterior and the N(0, I) prior.
        images: [B, *event] the (binarised) batch.
        labels: [B] int labels (or None).
        beta: the total-correlation weight (may be traced).
        tcvae_alpha: the mutual-information weight.
        tcvae_gamma: the dimension-wise KL weight.
        tcvae_estimator: 'mws' | 'mss'.
        dataset_size: N, the number of training examples (static, > 0).

    Returns:
        {'loss', 'recon', 'mi', 'tc', 'dwkl', 'kl', 'elbo'}, each [B].

    Raises:
        ValueError: the model is not a one-layer diagonal Gaussian with the N(0, I) prior;
            dataset_size unset.

    References: Chen et al., 2018.
    """
    if dataset_size < 1:
        raise ValueError(
            f'beta_tcvae needs the training set size (dataset_size={dataset_size}); the trainer '
            'sets it from the loaded data.'
        )

    def one(key, x, y):
        model = bind(x, y)
        q = None if model.one_layer is None else model.one_layer.q
        diagonal = isinstance(q, distrax.MultivariateNormalDiag)
        if not diagonal or not model.one_layer.standard_prior:
            raise ValueError(
                "objective='beta_tcvae' needs one stochastic layer with a diagonal Gaussian "
                "posterior (model.posterior='diagonal') and the standard-normal prior "
                "(model.prior.name='standard_normal')."
            )
        z = model.sample(key, 1)  # [1, D]
        return z[0], q.mean(), q.stddev(), model.log_likelihood(z)[0]

    labels_in = labels if labels is not None else jnp.zeros(images.shape[:1], jnp.int32)
    z, loc, scale, log_px = jax.vmap(one, axis_name='batch')(keys, images, labels_in)
    parts = tcvae.decompose(z, loc, scale, dataset_size=dataset_size, estimator=tcvae_estimator)
    return tcvae.objective_terms(log_px, parts, alpha=tcvae_alpha, beta=beta, gamma=tcvae_gamma)


MODEL_OBJECTIVES: dict[str, Any] = {
    'miwae': losses.Objective(model_miwae, options=('beta', 'k_samples', 'miwae_m', 'estimator')),
    'ciwae': losses.Objective(
        model_ciwae, options=('beta', 'k_samples', 'ciwae_beta', 'estimator')
    ),
    'piwae': losses.Objective(model_piwae, options=('beta', 'k_samples', 'piwae_m', 'estimator')),
    'beta_tcvae': losses.Objective(
        model_beta_tcvae,
        per_example=False,
        options=('beta', 'tcvae_alpha', 'tcvae_gamma', 'tcvae_estimator', 'dataset_size'),
    ),
}
