"""Variational bounds as pure functions of log importance weights.

Every bound here is a function of log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x), for
ONE example; batch them with `jax.vmap` and reduce outside. They know nothing about the model:
whatever produces the log-weights (one stochastic layer, a hierarchy, a flow posterior) can use
them. The gradient estimators (STL, DReG) are a matter of how log w was computed, not of these
functions.

    bound          log-weights    value
    elbo_bound     [K]            mean_k log w_k
    iwae_bound     [K]            log mean_k w_k
    miwae          [M, K]         mean_m log mean_k w_mk
    ciwae          [K]            beta * ELBO + (1 - beta) * IWAE
    piwae          [K]            (encoder objective, decoder objective)
    ess            [K]            (sum_k w_k)^2 / sum_k w_k^2, in [1, K]

All values are in nats; the bounds are lower bounds on log p(x) (maximise them; the loss is the
negative).
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _check_rank(log_w: jax.Array, rank: int, name: str, layout: str) -> jax.Array:
    log_w = jnp.asarray(log_w)
    if log_w.ndim != rank or log_w.size == 0:
        raise ValueError(
            f'{name} needs non-empty log-weights of shape {layout}, got shape {log_w.shape}.'
        )
    return log_w


def elbo_bound(log_w: jax.Array) -> jax.Array:
    """K-sample ELBO estimate: the mean of the log-weights.

    Args:
        log_w: [K] log-weights of one example.

    Returns:
        [] mean_k log w_k.

    References: Kingma & Welling, 2014.
    """
    return jnp.mean(_check_rank(log_w, 1, 'elbo_bound', '[K]'))


def iwae_bound(log_w: jax.Array) -> jax.Array:
    """IWAE-K bound: log of the mean importance weight.

    Args:
        log_w: [K] log-weights of one example.

    Returns:
        [] logsumexp_k(log w_k) - log K (stable log-mean-exp).

    References: Burda et al., 2016.
    """
    log_w = _check_rank(log_w, 1, 'iwae_bound', '[K]')
    return jax.nn.logsumexp(log_w) - math.log(log_w.shape[0])


def miwae(log_w: jax.Array) -> jax.Array:
    """MIWAE(M, K) bound: the mean over M independent groups of their IWAE-K bounds.

    MIWAE(1, K) is IWAE-K and MIWAE(M, 1) is the M-sample ELBO.

    Args:
        log_w: [M, K] log-weights of one example, M groups of K samples each.

    Returns:
        [] mean_m [logsumexp_k(log w_mk) - log K].

    References: Rainforth et al., 2018 ("Tighter variational bounds are not necessarily
        better", Eq. 4).
    """
    log_w = _check_rank(log_w, 2, 'miwae', '[M, K]')
    return jnp.mean(jax.nn.logsumexp(log_w, axis=1)) - math.log(log_w.shape[1])


def ciwae(log_w: jax.Array, beta: float | jax.Array) -> jax.Array:
    """CIWAE(beta) bound: the convex combination beta * ELBO + (1 - beta) * IWAE-K.

    Convention (Rainforth et al., 2018): beta weights the ELBO, so beta = 1 is the K-sample
    ELBO and beta = 0 is IWAE-K; both use the same K samples.

    Args:
        log_w: [K] log-weights of one example.
        beta: [] weight of the ELBO, in [0, 1]; may be traced (no recompiles).

    Returns:
        [] beta * mean_k log w_k + (1 - beta) * log mean_k w_k.

    References: Rainforth et al., 2018 (Eq. 5).
    """
    log_w = _check_rank(log_w, 1, 'ciwae', '[K]')
    return beta * elbo_bound(log_w) + (1 - beta) * iwae_bound(log_w)


def piwae(log_w: jax.Array, encoder_samples: int) -> tuple[jax.Array, jax.Array]:
    """PIWAE's two objectives from ONE set of K log-weights.

    The decoder (generative parameters theta) maximises IWAE-K over all K samples. The encoder
    (variational parameters phi) maximises MIWAE(K / M, M) on the same samples: the K samples
    split in consecutive groups of M = encoder_samples, each group an IWAE-M bound, averaged.
    With K = M the encoder objective is IWAE-M itself. The two objectives must reach different
    parameters; `piwae_gradients` does the routing.

    Args:
        log_w: [K] log-weights of one example.
        encoder_samples: M (static), dividing K.

    Returns:
        (encoder_objective [], decoder_objective []): MIWAE(K / M, M) and IWAE-K.

    Raises:
        ValueError: M does not divide K.

    References: Rainforth et al., 2018 (PIWAE, Section 4).
    """
    log_w = _check_rank(log_w, 1, 'piwae', '[K]')
    k = log_w.shape[0]
    if encoder_samples < 1 or k % encoder_samples:
        raise ValueError(
            f'piwae_m={encoder_samples} must be >= 1 and divide the number of samples '
            f'k_samples={k}.'
        )
    encoder_objective = miwae(log_w.reshape(k // encoder_samples, encoder_samples))
    return encoder_objective, iwae_bound(log_w)


def piwae_gradients(
    log_weights_fn: Callable[[Any], jax.Array],
    params: Any,
    is_encoder: Any,
    *,
    encoder_samples: int,
) -> tuple[dict[str, jax.Array], Any]:
    """PIWAE gradients with one forward pass: IWAE-M for phi, IWAE-K for theta.

    The caller separates the parameter sets with `is_encoder`, a pytree of bools with the
    structure of `params` (True for the posterior's parameters phi, False for the decoder's and
    prior's theta; `encoder_mask` builds one from top-level names). The log-weights are computed
    once (`jax.vjp`); the cotangents of the two objectives with respect to log w are pulled back
    through that single linearisation, and each leaf keeps the gradient of its own objective:
    grad_phi = d encoder_objective / d phi, grad_theta = d decoder_objective / d theta. No
    stop_gradient surgery inside the model is needed, so any way of computing log w (any
    estimator path through z) works.

    Args:
        log_weights_fn: params -> [B, K] log-weights of a batch (sampling noise fixed inside,
            e.g. a key closed over).
        params: the parameter pytree.
        is_encoder: pytree of bools, same structure as params.
        encoder_samples: M (static), dividing K.

    Returns:
        (terms, grads): terms = {'encoder_objective': [], 'decoder_objective': []} (batch means)
        and grads, the pytree of gradients of the NEGATIVE objectives (a loss to minimise),
        leaf-wise from the encoder or the decoder objective.

    Raises:
        ValueError: log_weights_fn does not return [B, K]; M does not divide K.

    References: Rainforth et al., 2018.
    """
    log_w, pullback = jax.vjp(log_weights_fn, params)
    if log_w.ndim != 2:
        raise ValueError(f'log_weights_fn must return [B, K] log-weights, got {log_w.shape}.')

    def batch_objectives(lw):
        enc, dec = jax.vmap(lambda row: piwae(row, encoder_samples))(lw)
        return jnp.mean(enc), jnp.mean(dec)

    (enc_value, dec_value), objectives_vjp = jax.vjp(batch_objectives, log_w)
    one, zero = jnp.ones((), log_w.dtype), jnp.zeros((), log_w.dtype)
    (d_enc,) = objectives_vjp((-one, zero))  # [B, K] cotangents of the negative objectives
    (d_dec,) = objectives_vjp((zero, -one))
    (grads_enc,) = pullback(d_enc)
    (grads_dec,) = pullback(d_dec)
    grads = jax.tree.map(
        lambda enc, g_enc, g_dec: g_enc if enc else g_dec, is_encoder, grads_enc, grads_dec
    )
    return {'encoder_objective': enc_value, 'decoder_objective': dec_value}, grads


def encoder_mask(params: dict[str, Any], encoder_names: tuple[str, ...]) -> dict[str, Any]:
    """A pytree of bools for `piwae_gradients`: True under the named top-level entries.

    Args:
        params: a parameter dict (e.g. a Flax 'params' collection).
        encoder_names: top-level keys that hold the posterior's parameters.

    Returns:
        Same structure as params, leaves True (encoder) or False (decoder, prior).

    Raises:
        ValueError: a name in encoder_names is not a top-level key of params.
    """
    missing = [name for name in encoder_names if name not in params]
    if missing:
        raise ValueError(
            f'encoder names {missing} are not top-level parameter names; have {sorted(params)}.'
        )
    return {
        name: jax.tree.map(lambda _, is_enc=name in encoder_names: is_enc, subtree)
        for name, subtree in params.items()
    }


def ess(log_w: jax.Array) -> jax.Array:
    """Effective sample size of self-normalised importance weights.

    Args:
        log_w: [K] log-weights of one example.

    Returns:
        [] (sum_k w_k)^2 / sum_k w_k^2 in [1, K]; K for equal weights, 1 when one dominates.
        Computed as exp(2 logsumexp(l) - logsumexp(2 l)), l = log w - max log w.

    References: Kong, 1992; Owen, 2013 (Monte Carlo theory, methods and examples, Eq. 9.13).
    """
    log_w = _check_rank(log_w, 1, 'ess', '[K]')
    # Shift by the max first: at |log w| ~ 1e3 float32 would lose the last digits of both sums.
    shifted = log_w - jax.lax.stop_gradient(jnp.max(log_w))
    return jnp.exp(2 * jax.nn.logsumexp(shifted) - jax.nn.logsumexp(2 * shifted))
