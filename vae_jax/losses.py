"""Per-example VAE objectives: (beta-)ELBO, IWAE-k with reparam | STL | DReG gradients, autoencoder.

Pure loss functions. Each objective takes ONE example and returns a dict of scalars; batch them
with `jax.vmap(..., axis_name='batch')` and reduce (mean) outside, as steps.py does.

    encode: x [*event] -> distrax posterior q(z|x), event [D], batch [] (params already bound;
        for a CVAE bind the label too: `lambda x: q_of(x, y)`, and likewise for decode).
    decode: z [K, D] -> distrax likelihood p(x|z), batch [K], event = x.shape.

Each objective calls `decode` exactly once, with all K samples at once (never vmapped), so
stateful layers such as BatchNorm see a single call.

These are the one-layer special case of the objectives over log-weights, which take any
`LatentModel` (any number of stochastic layers) and live in `vae_jax.log_weights`; the KL
divergences live in `vae_jax.divergences`. Both are re-exported here under their names
(`losses.LatentModel`, `losses.model_elbo`, `losses.kl_divergence`, ...). The objectives a
config can name, with their options, are the registry `vae_jax.objectives`.
"""

from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import optax

from vae_jax import log_weights, registry
from vae_jax.divergences import kl_divergence, kl_per_dimension
from vae_jax.log_weights import (
    ESTIMATORS,
    LatentModel,
    OneLayer,
    model_autoencoder,
    model_elbo,
    model_iwae,
    model_log_weights,
    one_layer_model,
    sample_with_log_q,
)

__all__ = [
    'ESTIMATORS',
    'OBJECTIVES',
    'LatentModel',
    'OneLayer',
    'autoencoder',
    'elbo',
    'get_objective',
    'iwae',
    'kl_divergence',
    'kl_per_dimension',
    'log_importance_weights',
    'make_beta_fn',
    'model_autoencoder',
    'model_elbo',
    'model_iwae',
    'model_log_weights',
    'one_layer_model',
    'sample_with_log_q',
]


# ---------------------------------------------------------------------------------------------
# The one-layer API: encode/decode closures (the common special case of the above).


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Callable[[jax.Array], distrax.Distribution],
    decode: Callable[[jax.Array], distrax.Distribution],
    *,
    beta: float | jax.Array = 1.0,
    k_samples: int = 1,
    analytic_kl: bool = True,
    kl_samples: int = 1,
    free_bits: float = 0.0,
    prior: distrax.Distribution | None = None,
) -> dict[str, jax.Array]:
    """Negative (beta-)ELBO for one example: recon + beta * KL.

    z_1..z_N ~ q(z|x) by reparameterisation from `key`, N = k_samples (or max(k_samples,
    kl_samples) for a Monte-Carlo KL). The reconstruction term averages the first k_samples;
    a Monte-Carlo KL averages log q(z_n) - log p(z_n) over the first kl_samples of the SAME
    draws, so with kl_samples == k_samples the bound is the standard estimator mean_k log w_k
    (and with k_samples = 1 it equals `iwae(..., k_samples=1)` for the same key).
    `model_elbo(key, one_layer_model(x, encode, decode, prior), ...)`.

    Args:
        key: PRNG key, consumed once.
        x: [*event] one example.
        encode: x -> q(z|x), event [D], batch [].
        decode: z [K, D] -> p(x|z), batch [K], event x.shape.
        beta: KL weight (Higgins et al.); may be traced, so changing it does not recompile.
        k_samples: K samples for the reconstruction term (static).
        analytic_kl: closed-form KL when one is registered for (q, prior); else Monte Carlo.
        kl_samples: samples for a Monte-Carlo KL (static).
        free_bits: lambda >= 0 nats; the LOSS uses sum_d max(KL_d, lambda) with the analytic
            per-dimension KL (plus, for a full-covariance q, the total-correlation remainder),
            per example (Kingma et al. 2016 clamp the batch mean). Needs a Gaussian q, the
            default N(0, I) prior and analytic_kl. 'kl' and 'elbo' stay unclamped.
        prior: p(z) with event [D]; default N(0, I).

    Returns:
        {'loss': recon + beta * KL (free bits applied), 'recon': -mean_k log p(x|z_k),
            'kl': KL(q||p) (analytic or estimated), 'elbo': -(recon + kl)}, all [] float32.

    Raises:
        ValueError: shape mismatches between x, q, the prior and p(x|z); free bits without an
            analytic per-dimension KL.

    References: Kingma & Welling, 2014; Higgins et al., 2017 (beta);
        Kingma et al., 2016 (free bits).
    """
    if not log_weights.is_zero(free_bits) and (prior is not None or not analytic_kl):
        raise ValueError(
            f'free_bits={free_bits} needs the analytic per-dimension KL against N(0, I): '
            f'use analytic_kl=True and the default prior (got analytic_kl={analytic_kl}, '
            f'prior={None if prior is None else prior.name}).'
        )
    return log_weights.model_elbo(
        key,
        log_weights.one_layer_model(x, encode, decode, prior),
        beta=beta,
        k_samples=k_samples,
        analytic_kl=analytic_kl,
        kl_samples=kl_samples,
        free_bits=free_bits,
    )


def iwae(
    key: jax.Array,
    x: jax.Array,
    encode: Callable[[jax.Array], distrax.Distribution],
    decode: Callable[[jax.Array], distrax.Distribution],
    *,
    beta: float | jax.Array = 1.0,
    k_samples: int = 1,
    estimator: str = 'reparam',
    prior: distrax.Distribution | None = None,
) -> dict[str, jax.Array]:
    """Negative (beta-)IWAE bound for one example, with a choice of gradient estimator.

    log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), z_k ~ q by reparameterisation;
    bound_beta = logsumexp_k(log w_k) - log K. The loss VALUE is always -bound_beta; its GRADIENT
    depends on `estimator` (w~ = softmax(log w), sg = stop_gradient, phi = q's parameters):
    - 'reparam': the plain reparameterised gradient of -bound_beta (Burda et al., 2016).
    - 'stl': sticking the landing, log q evaluated with sg(phi) (Roeder et al., 2017). Unbiased
      for k_samples = 1; for k_samples > 1 the encoder gradient is biased (decoder gradient
      unchanged).
    - 'dreg': doubly reparameterised (Tucker et al., 2018): decoder/prior gradient
      sum_k w~_k grad log w_k; encoder gradient through z only, with weights
      (1 - beta) w~_k + beta w~_k^2 (w~_k^2 at beta = 1), unbiased for the IWAE encoder gradient.
      The z-path reweighting uses a custom VJP: reverse-mode AD only; differentiate 'loss' only
      (the other entries are stop-gradient values); under vmap, z or x must be batched along
      every vmapped axis (always true when keys or data are).
    With the exact posterior, 'stl' and 'dreg' encoder gradients are zero (up to rounding).
    `model_iwae(key, one_layer_model(x, encode, decode, prior), ...)`.

    Args:
        key: PRNG key, consumed once.
        x: [*event] one example.
        encode: x -> q(z|x), event [D], batch [].
        decode: z [K, D] -> p(x|z), batch [K], event x.shape.
        beta: weight on log p(z) - log q(z|x); may be traced (no recompiles).
        k_samples: K importance samples (static).
        estimator: 'reparam' | 'stl' | 'dreg'.
        prior: p(z) with event [D]; default N(0, I).

    Returns:
        {'loss': -bound_beta, 'bound': log mean_k w_k at beta = 1, 'recon': -mean_k log p(x|z_k),
            'kl': mean_k [log q(z_k) - log p(z_k)], 'elbo': mean_k log w_k at beta = 1,
            'ess': (sum_k w_k)^2 / sum_k w_k^2 at beta = 1 (bounds.ess)},
        all [] float32.

    Raises:
        ValueError: unknown estimator; shape mismatches between x, q, the prior and p(x|z).

    References: Burda et al., 2016; Roeder et al., 2017; Tucker et al., 2018.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f'gradient_estimator={estimator!r} is not one of {ESTIMATORS}.')
    return log_weights.model_iwae(
        key,
        log_weights.one_layer_model(x, encode, decode, prior),
        beta=beta,
        k_samples=k_samples,
        estimator=estimator,
    )


def log_importance_weights(
    key: jax.Array,
    x: jax.Array,
    encode: Callable[[jax.Array], distrax.Distribution],
    decode: Callable[[jax.Array], distrax.Distribution],
    *,
    k_samples: int,
    prior: distrax.Distribution | None = None,
) -> jax.Array:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x), k = 1..K.

    For chunked importance-sampling estimates of log p(x) (evaluation): combine chunks with
    logsumexp over all of them, minus log of the total sample count. No gradients intended.

    Args:
        key: PRNG key, consumed once.
        x: [*event] one example.
        encode: x -> q(z|x), event [D], batch [].
        decode: z [K, D] -> p(x|z), batch [K], event x.shape.
        k_samples: K (static).
        prior: p(z) with event [D]; default N(0, I).

    Returns:
        [K] float32 log weights.

    References: Burda et al., 2016.
    """
    return log_weights.model_log_weights(
        key, log_weights.one_layer_model(x, encode, decode, prior), k_samples=k_samples
    )


def autoencoder(
    key: jax.Array,
    x: jax.Array,
    encode: Callable[[jax.Array], distrax.Distribution],
    decode: Callable[[jax.Array], distrax.Distribution],
    **unused_kwargs,
) -> dict[str, jax.Array]:
    """Deterministic autoencoder loss for one example: -log p(x | z = mean of q(z|x)).

    Args:
        key: unused (kept for a uniform objective signature).
        x: [*event] one example.
        encode: x -> q(z|x) (e.g. the 'delta' posterior), event [D]; its mean is the code.
        decode: z [1, D] -> p(x|z), batch [1], event x.shape.
        **unused_kwargs: beta, k_samples, ... are accepted and ignored.

    Returns:
        {'loss': recon, 'recon': -log p(x|z), 'mse': sum (mean of p(x|z) - x)^2}, all [].

    Raises:
        ValueError: shape mismatches between x, q and p(x|z).
    """
    return log_weights.model_autoencoder(key, log_weights.one_layer_model(x, encode, decode))


OBJECTIVES = {'elbo': elbo, 'iwae': iwae, 'autoencoder': autoencoder}


def get_objective(name: str) -> Callable[..., dict[str, jax.Array]]:
    """The per-example objective called `name`.

    Raises:
        ValueError: naming the allowed objectives.
    """
    if name not in OBJECTIVES:
        raise ValueError(f'objective={name!r} is not one of {tuple(OBJECTIVES)}.')
    return OBJECTIVES[name]


def make_beta_fn(beta: float, warmup_steps: int) -> Callable[[jax.Array], jax.Array]:
    """KL weight schedule: linear 0 -> beta over warmup_steps, then beta.

    warmup_steps = 0 means a constant beta. (optax.linear_schedule(0, beta, 0) would stay at
    0.0 forever, since optax holds init_value when transition_steps <= 0.)

    Args:
        beta: final KL weight.
        warmup_steps: >= 0 steps of linear warm-up.

    Returns:
        step [] int -> beta [] float32, jit-compatible.

    Raises:
        ValueError: negative warmup_steps.
    """
    if warmup_steps < 0:
        raise ValueError(f'beta_warmup_steps={warmup_steps} must be >= 0.')
    if warmup_steps == 0:
        return lambda step: jnp.full(jnp.shape(step), beta, jnp.float32)
    schedule = optax.linear_schedule(0.0, beta, warmup_steps)
    return lambda step: jnp.asarray(schedule(step), jnp.float32)


# The objective type, kept under the name earlier releases documented; the registry of the
# objectives a config can name is `vae_jax.objectives`.
Objective = registry.Objective
