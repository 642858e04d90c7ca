"""Per-example VAE objectives: (beta-)ELBO, IWAE-k with reparam | STL | DReG gradients, autoencoder.

Each objective takes ONE example and returns a dict of scalars; batch them with
`jax.vmap(..., axis_name='batch')` and reduce (mean) outside, as steps.py does.

    encode: x [*event] -> distrax posterior q(z|x), event [D], batch [] (params already bound;
        for a CVAE bind the label too: `lambda x: q_of(x, y)`, and likewise for decode).
    decode: z [K, D] -> distrax likelihood p(x|z), batch [K], event = x.shape.

Each objective calls `decode` exactly once, with all K samples at once (never vmapped), so
stateful layers such as BatchNorm see a single call.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import bounds, distributions

ESTIMATORS = ('reparam', 'stl', 'dreg')


# ---------------------------------------------------------------------------------------------
# KL divergences.


def _analytic_kl_or_none(q: distrax.Distribution, p: distrax.Distribution):
    """KL(q||p) in closed form when one is registered (distrax / TFP registry), else None."""
    try:
        return q.kl_divergence(p)
    except NotImplementedError:
        return None


def kl_divergence(
    q: distrax.Distribution,
    p: distrax.Distribution,
    *,
    analytic: bool = True,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """KL(q || p): closed form where one exists (and `analytic`), else Monte Carlo.

    Args:
        q: distribution with batch shape [...] (typically [] and event [D]).
        p: distribution with the same event shape.
        analytic: use the closed form when registered.
        key: PRNG key, required for the Monte-Carlo estimate.
        num_samples: Monte-Carlo samples n (static).

    Returns:
        [...] the KL, or its unbiased n-sample estimate mean_n [log q(z_n) - log p(z_n)].

    Raises:
        ValueError: a Monte-Carlo estimate is needed but no key was given.
    """
    if analytic:
        kl = _analytic_kl_or_none(q, p)
        if kl is not None:
            return kl
    if key is None:
        raise ValueError(
            f'KL({q.name} || {p.name}) needs a Monte-Carlo estimate (analytic={analytic}), '
            'so kl_divergence needs a key.'
        )
    z = q.sample(seed=key, sample_shape=num_samples)
    return jnp.mean(_log_prob_of_samples(q, z) - _log_prob_of_samples(p, z), axis=0)


def kl_per_dimension(q: distrax.Distribution) -> jax.Array:
    """Per-latent KL(q_d || N(0, 1)) of a Gaussian posterior's marginals.

    For a diagonal q these sum to KL(q || N(0, I)). For a full-covariance q they are the
    marginals' KLs, whose sum is <= KL(q || N(0, I)) (the gap is q's total correlation).

    Args:
        q: MultivariateNormalDiag / MultivariateNormalTri with batch [...] and event [D].

    Returns:
        [..., D] = 0.5 (mu^2 + var - 1 - log var).

    Raises:
        ValueError: q is not a distrax multivariate normal.
    """
    if not isinstance(q, distrax.MultivariateNormalFromBijector):
        raise ValueError(f'kl_per_dimension needs a Gaussian posterior, got {q.name}.')
    if isinstance(q.scale, distrax.DiagLinear):
        scale = q.stddev()
        log_var = 2 * jnp.log(scale)
        var = jnp.square(scale)
    else:
        var = q.variance()
        log_var = jnp.log(var)
    return 0.5 * (jnp.square(q.mean()) + var - 1 - log_var)


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def _posterior_and_prior(encode, x, prior):
    """Runs the encoder and checks q and the prior against each other."""
    q = encode(x)
    if len(q.event_shape) != 1 or tuple(q.batch_shape) != ():
        raise ValueError(
            'encode(x) must return a posterior with event shape [D] and batch shape [] for one '
            f'example; got event shape {tuple(q.event_shape)} and batch shape '
            f'{tuple(q.batch_shape)} for x of shape {x.shape}. Batch with jax.vmap outside.'
        )
    if prior is None:
        prior = distributions.standard_normal_prior(q.event_shape[0])
    elif tuple(prior.event_shape) != tuple(q.event_shape) or tuple(prior.batch_shape) != ():
        raise ValueError(
            f'The prior has event shape {tuple(prior.event_shape)} and batch shape '
            f'{tuple(prior.batch_shape)}, but the posterior has event shape '
            f'{tuple(q.event_shape)} (the prior needs the same event shape and batch shape []).'
        )
    return q, prior


def _log_likelihood(decode, z, x):
    """log p(x | z_k) for z [K, D] from ONE decode call; returns [K]."""
    px = decode(z)
    expected_batch = z.shape[:1]
    if tuple(px.event_shape) != x.shape or tuple(px.batch_shape) != expected_batch:
        raise ValueError(
            f'decode(z) for z of shape {z.shape} returned a likelihood with event shape '
            f'{tuple(px.event_shape)} and batch shape {tuple(px.batch_shape)}, but x has shape '
            f'{x.shape}: expected event shape {x.shape} and batch shape {expected_batch}.'
        )
    return px.log_prob(jnp.broadcast_to(x, expected_batch + x.shape))


def _log_prob_of_samples(d: distrax.Distribution, z: jax.Array) -> jax.Array:
    """log d(z_n) for samples z [N, *batch, *event] -> [N, *batch].

    vmapped over the sample axis because distrax broadcasts [N, D] against loc [D] by implicit
    rank promotion, which jax_numpy_rank_promotion='raise' (our tests) rejects.
    """
    return jax.vmap(d.log_prob)(z)


def _is_zero(value) -> bool:
    """True only for a concrete zero (a traced value is never skipped)."""
    return not isinstance(value, jax.core.Tracer) and np.ndim(value) == 0 and float(value) == 0


# ---------------------------------------------------------------------------------------------
# The general model: log-weights over a latent pytree.


class OneLayer(NamedTuple):
    """The one-stochastic-layer special case, as distributions (enables analytic KL, free bits).

    Attributes:
        q: the posterior q(z|x), event [D], batch [].
        prior: p(z), event [D], batch [].
        decode: z [K, D] -> p(x|z), batch [K].
        standard_prior: True when the prior is N(0, I) (free bits needs it).
    """

    q: distrax.Distribution
    prior: distrax.Distribution
    decode: Callable[[jax.Array], distrax.Distribution]
    standard_prior: bool


class LatentModel(NamedTuple):
    """One example's latent-variable model with its parameters bound: what the objectives need.

    A latent z is a pytree of arrays (one leaf per stochastic layer, e.g. {'z1': .., 'z2': ..});
    every leaf carries a leading sample axis K. All objectives are functions of the log-weights
    log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x).

    Attributes:
        x: [*event] the example (DReG uses it to keep its probes batched under vmap).
        sample: (key, K) -> z, a reparameterised draw from q(z|x): differentiable in q's
            parameters along the sampling path.
        log_q: (z, stop_variational) -> [K] log q(z|x). With stop_variational=True every layer's
            variational parameters are stopped BEFORE the density is built and z stays live,
            which is what sticking-the-landing and DReG need.
        log_likelihood: z -> [K] log p(x|z).
        log_prior: z -> [K] log p(z) (a learned prior keeps its gradients).
        one_layer: the distributions, when the model is one stochastic layer given as
            `encode`/`decode` (analytic KL and free bits use them), else None.
        sample_and_log_q: optional (key, K) -> (z, [K] log q(z|x)): the draw `sample(key, K)`
            makes and `log_q(z, False)` of it, from one pass of the inference network (the
            protocol's `sample_and_log_posterior`). When set, objectives use it wherever they
            score a fresh sample with live parameters (`sample_with_log_q`); STL and DReG need
            `log_q(z, True)` and never use it. None: `sample` then `log_q`.
    """

    x: jax.Array
    sample: Callable[[jax.Array, int], Any]
    log_q: Callable[[Any, bool], jax.Array]
    log_likelihood: Callable[[Any], jax.Array]
    log_prior: Callable[[Any], jax.Array]
    one_layer: OneLayer | None = None
    sample_and_log_q: Callable[[jax.Array, int], tuple[Any, jax.Array]] | None = None


def one_layer_model(
    x: jax.Array,
    encode: Callable[[jax.Array], distrax.Distribution],
    decode: Callable[[jax.Array], distrax.Distribution],
    prior: distrax.Distribution | None = None,
) -> LatentModel:
    """The `encode`/`decode` closures of one example as a `LatentModel` with latent z [K, D].

    The encoder runs once; sampling is `q.sample`, so the general objectives draw exactly the
    samples the one-layer functions always drew for the same key.

    Args:
        x: [*event] one example.
        encode: x -> q(z|x), event [D], batch [].
        decode: z [K, D] -> p(x|z), batch [K], event x.shape.
        prior: p(z), event [D]; default N(0, I).

    Returns:
        The model; `log_q(z, True)` rebuilds q from stopped parameters
        (`distributions.stop_gradient`).

    Raises:
        ValueError: q, the prior and p(x|z) do not fit x and each other.
    """
    standard = prior is None
    q, prior = _posterior_and_prior(encode, x, prior)

    def log_q(z, stop_variational):
        dist = distributions.stop_gradient(q) if stop_variational else q
        return _log_prob_of_samples(dist, z)

    return LatentModel(
        x=x,
        sample=lambda key, k: q.sample(seed=key, sample_shape=k),
        log_q=log_q,
        log_likelihood=lambda z: _log_likelihood(decode, z, x),
        log_prior=lambda z: _log_prob_of_samples(prior, z),
        one_layer=OneLayer(q, prior, decode, standard),
    )


def _num_samples(z) -> int:
    leaves = jax.tree.leaves(z)
    if not leaves or any(leaf.ndim < 1 for leaf in leaves):
        raise ValueError(
            'sample(key, K) must return a pytree of arrays with a leading sample axis K, got '
            f'{jax.tree.map(jnp.shape, z)}.'
        )
    k = leaves[0].shape[0]
    if any(leaf.shape[0] != k for leaf in leaves):
        raise ValueError(
            'Every leaf of z needs the same leading sample axis K, got '
            f'{jax.tree.map(jnp.shape, z)}.'
        )
    return k


def _checked(name: str, value: jax.Array, k: int) -> jax.Array:
    """A model's [K] log-density, with a shape error that names the method."""
    if jnp.shape(value) != (k,):
        raise ValueError(f'{name}(z) must return [K]=({k},), got shape {jnp.shape(value)}.')
    return value


def sample_with_log_q(key: jax.Array, model: LatentModel, k: int) -> tuple[Any, jax.Array]:
    """K reparameterised draws z ~ q(z|x) and their log q(z|x) [K] with live parameters.

    One pass through `model.sample_and_log_q` when the model has it, else `model.sample` then
    `model.log_q(z, False)`; the same z for the same key either way, and log q equal to float
    rounding. Not for STL / DReG, which need log q with stopped variational parameters.

    Raises:
        ValueError: z does not have K samples, or log q is not [K].
    """
    if model.sample_and_log_q is None:
        z = model.sample(key, k)
        if _num_samples(z) != k:
            raise ValueError(f'sample(key, {k}) returned {_num_samples(z)} samples.')
        return z, _checked('log_q', model.log_q(z, False), k)
    z, log_qz = model.sample_and_log_q(key, k)
    if _num_samples(z) != k or jnp.shape(log_qz) != (k,):
        raise ValueError(
            f'sample_and_log_q(key, {k}) must return (z with K={k} samples, log q [K]=({k},)), '
            f'got z {jax.tree.map(jnp.shape, z)} and log q of shape {jnp.shape(log_qz)}.'
        )
    return z, log_qz


def _log_terms(model: LatentModel, z, *, stop_variational: bool, log_qz=None):
    """(log p(x|z) [K], log p(z) - log q(z|x) [K]) for samples z with leading axis K.

    log_qz: [K] log q(z|x) already computed with the sample (`sample_with_log_q`), or None to
    call `model.log_q(z, stop_variational)`.
    """
    k = _num_samples(z)
    log_px = _checked('log_likelihood', model.log_likelihood(z), k)
    log_pz = _checked('log_prior', model.log_prior(z), k)
    if log_qz is None:
        log_qz = _checked('log_q', model.log_q(z, stop_variational), k)
    return log_px, log_pz - log_qz


def _first(z, n: int):
    return jax.tree.map(lambda leaf: leaf[:n], z)


def model_elbo(
    key: jax.Array,
    model: LatentModel,
    *,
    beta: float | jax.Array = 1.0,
    k_samples: int = 1,
    analytic_kl: bool = True,
    kl_samples: int = 1,
    free_bits: float = 0.0,
) -> dict[str, jax.Array]:
    """Negative (beta-)ELBO of one example for any `LatentModel`: recon + beta * KL.

    The KL is analytic only for a one-layer model whose (q, prior) pair has a registered closed
    form (and `analytic_kl`); otherwise it is the Monte-Carlo estimate
    mean_n [log q(z_n|x) - log p(z_n)] over the first kl_samples of the same draws
    z_1..z_N ~ q (N = max(k_samples, kl_samples)) whose first k_samples give the reconstruction
    term. For a Monte-Carlo KL, z and log q come from one pass when the model has
    `sample_and_log_q`. Arguments and returns as `elbo`.

    Raises:
        ValueError: free bits on a model that is not one layer with the N(0, I) prior, or
            log-densities whose shape is not [K].

    References: Kingma & Welling, 2014; Higgins et al., 2017; Kingma et al., 2016.
    """
    use_free_bits = not _is_zero(free_bits)
    one = model.one_layer
    if use_free_bits and (one is None or not one.standard_prior or not analytic_kl):
        raise ValueError(
            f'free_bits={free_bits} needs the analytic per-dimension KL against N(0, I): '
            f'use analytic_kl=True, one stochastic layer and the default prior (got '
            f'analytic_kl={analytic_kl}, one layer={one is not None}, '
            f'standard prior={one is not None and one.standard_prior}).'
        )
    kl = _analytic_kl_or_none(one.q, one.prior) if (analytic_kl and one is not None) else None
    num_draws = k_samples if kl is not None else max(k_samples, kl_samples)
    log_q_all = None
    if kl is None and model.sample_and_log_q is not None:
        z, log_q_all = sample_with_log_q(key, model, num_draws)  # one pass, log q of all draws
    else:
        z = model.sample(key, num_draws)
    n = _num_samples(z)
    if n != num_draws:
        raise ValueError(f'sample(key, {num_draws}) returned {n} samples.')
    recon = -jnp.mean(
        _checked('log_likelihood', model.log_likelihood(_first(z, k_samples)), k_samples)
    )
    if kl is None:
        z_kl = _first(z, kl_samples)
        log_pz = _checked('log_prior', model.log_prior(z_kl), kl_samples)
        if log_q_all is None:
            log_qz = _checked('log_q', model.log_q(z_kl, False), kl_samples)
        else:
            log_qz = log_q_all[:kl_samples]
        kl = jnp.mean(log_qz - log_pz)
    kl_loss = kl
    if use_free_bits:
        kl_dims = kl_per_dimension(one.q)  # [D]
        kl_loss = jnp.sum(jnp.maximum(kl_dims, free_bits)) + (kl - jnp.sum(kl_dims))
    return {'loss': recon + beta * kl_loss, 'recon': recon, 'kl': kl, 'elbo': -(recon + kl)}


@jax.custom_vjp
def _gradient_scale_tap(z, anchor):
    """Identity on z [K, ...] plus two zero probes, ([K], []), that set z's gradient scale.

    A term `sum_k probe_k * c_k + unit` added to a surrogate S leaves S's value unchanged and
    sends cotangents u * c_k and u to the probes (u = dLoss/dS); the backward pass multiplies
    z_k's cotangent by their ratio c_k. So the z-path gradient is scaled by c_k although c_k is
    only known AFTER the single likelihood call (the usual identity sg(z) + c (z - sg(z)) would
    need c first, i.e. a second decoder pass).

    Under vmap the probes must be batched exactly like the loss, or JAX would sum their
    cotangents over the batch before the ratio is taken. `select` with an always-true predicate
    makes every output depend on both z and `anchor` (a scalar from x) without changing a value
    (NaN/inf-safe, unlike 0 * anchor), so the outputs are batched whenever z or x is.
    """
    z_out = jax.lax.select(
        jnp.ones(z.shape, bool), z, jnp.broadcast_to(anchor.astype(z.dtype), z.shape)
    )
    first = z_out.reshape(z.shape[0], -1)[:, 0]
    probe = jax.lax.select(jnp.ones(z.shape[:1], bool), jnp.zeros(z.shape[:1], z.dtype), first)
    unit = jax.lax.select(jnp.ones((), bool), jnp.zeros((), z.dtype), first[0])
    return z_out, probe, unit


def _gradient_scale_tap_fwd(z, anchor):
    return _gradient_scale_tap(z, anchor), jnp.zeros_like(anchor)


def _gradient_scale_tap_bwd(anchor_zero, cotangents):
    g_z, g_scale, g_unit = cotangents
    safe_unit = jnp.where(g_unit == 0, jnp.ones_like(g_unit), g_unit)
    ratio = jnp.where(g_unit == 0, jnp.zeros_like(g_scale), g_scale / safe_unit)  # [K]
    return g_z * ratio.reshape(ratio.shape + (1,) * (g_z.ndim - 1)), anchor_zero


_gradient_scale_tap.defvjp(_gradient_scale_tap_fwd, _gradient_scale_tap_bwd)


def model_iwae(
    key: jax.Array,
    model: LatentModel,
    *,
    beta: float | jax.Array = 1.0,
    k_samples: int = 1,
    estimator: str = 'reparam',
) -> dict[str, jax.Array]:
    """Negative (beta-)IWAE bound of one example for any `LatentModel`.

    log w_k = log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)), z_k ~ q drawn once; the value is
    always -(logsumexp_k log w_k - log K); the gradient follows `estimator` exactly as in `iwae`:
    'stl' evaluates log q with every layer's variational parameters stopped (z live); 'dreg'
    additionally reweights the gradient along the whole sampling path of z (all layers; the
    probes are attached after the last layer is drawn, so a hierarchy is scaled once). With
    'reparam', z and log q come from one pass when the model has `sample_and_log_q`; 'stl' and
    'dreg' call `sample` and `log_q(z, True)`. Arguments and returns as `iwae`.

    Raises:
        ValueError: unknown estimator; log-densities whose shape is not [K].

    References: Burda et al., 2016; Roeder et al., 2017; Tucker et al., 2018.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f'gradient_estimator={estimator!r} is not one of {ESTIMATORS}.')
    log_qz = None
    if estimator == 'reparam':
        # One pass when the model has it: log q with live parameters is what reparam needs.
        z, log_qz = sample_with_log_q(key, model, k_samples)
    else:
        z = model.sample(key, k_samples)  # live in q's parameters
        if _num_samples(z) != k_samples:
            raise ValueError(f'sample(key, {k_samples}) returned {_num_samples(z)} samples.')
    probe_terms = []
    if estimator == 'dreg':
        anchor = jax.lax.stop_gradient(jnp.reshape(model.x, -1)[0])
        leaves, treedef = jax.tree.flatten(z)
        tapped = [_gradient_scale_tap(leaf, anchor) for leaf in leaves]
        z = jax.tree.unflatten(treedef, [t[0] for t in tapped])
        probe_terms = [(t[1], t[2]) for t in tapped]
    # STL / DReG: log q sees z (live) but not q's parameters, dropping the score-function term.
    log_px, log_ratio = _log_terms(model, z, stop_variational=estimator != 'reparam', log_qz=log_qz)
    log_w = log_px + beta * log_ratio
    log_k = math.log(k_samples)
    bound_beta = jax.nn.logsumexp(log_w) - log_k  # stable log-mean-exp
    if estimator == 'reparam':
        loss = -bound_beta
    else:
        if estimator == 'stl':
            surrogate = bound_beta
        else:
            weights = jax.lax.stop_gradient(jax.nn.softmax(log_w))  # [K] w~
            z_scale = jax.lax.stop_gradient((1 - beta) + beta * weights)  # [K]
            surrogate = jnp.sum(weights * log_w)
            for probe, unit in probe_terms:
                surrogate = surrogate + jnp.sum(probe * z_scale) + unit
        # Value -bound_beta, gradient -grad(surrogate).
        loss = -(jax.lax.stop_gradient(bound_beta) + surrogate - jax.lax.stop_gradient(surrogate))
    if estimator == 'dreg':  # the DReG z-path reweighting would also apply to these
        log_px, log_ratio = jax.lax.stop_gradient((log_px, log_ratio))
    log_w_unweighted = log_px + log_ratio
    return {
        'loss': loss,
        'bound': jax.nn.logsumexp(log_w_unweighted) - log_k,
        'recon': -jnp.mean(log_px),
        'kl': -jnp.mean(log_ratio),
        'elbo': jnp.mean(log_w_unweighted),
        # Effective sample size of the K weights (value only): how many samples the bound uses.
        'ess': bounds.ess(jax.lax.stop_gradient(log_w_unweighted)),
    }


def model_log_weights(key: jax.Array, model: LatentModel, *, k_samples: int) -> jax.Array:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): [K] (no gradients meant).

    z and log q come from one pass when the model has `sample_and_log_q`.

    References: Burda et al., 2016.
    """
    z, log_qz = sample_with_log_q(key, model, k_samples)
    log_px, log_ratio = _log_terms(model, z, stop_variational=False, log_qz=log_qz)
    return log_px + log_ratio


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
    if not _is_zero(free_bits) and (prior is not None or not analytic_kl):
        raise ValueError(
            f'free_bits={free_bits} needs the analytic per-dimension KL against N(0, I): '
            f'use analytic_kl=True and the default prior (got analytic_kl={analytic_kl}, '
            f'prior={None if prior is None else prior.name}).'
        )
    return model_elbo(
        key,
        one_layer_model(x, encode, decode, prior),
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
    return model_iwae(
        key,
        one_layer_model(x, encode, decode, prior),
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
    return model_log_weights(key, one_layer_model(x, encode, decode, prior), k_samples=k_samples)


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
    del key, unused_kwargs
    q, _ = _posterior_and_prior(encode, x, None)
    z = q.mean()[None]  # [1, D]: decode keeps its [K, D] -> batch [K] convention.
    px = decode(z)
    if tuple(px.event_shape) != x.shape or tuple(px.batch_shape) != (1,):
        raise ValueError(
            f'decode(z) for z of shape {z.shape} returned a likelihood with event shape '
            f'{tuple(px.event_shape)} and batch shape {tuple(px.batch_shape)}, but x has shape '
            f'{x.shape}: expected event shape {x.shape} and batch shape (1,).'
        )
    recon = -px.log_prob(x[None])[0]
    return {'loss': recon, 'recon': recon, 'mse': jnp.sum(jnp.square(px.mean()[0] - x))}


OBJECTIVES = {'elbo': elbo, 'iwae': iwae, 'autoencoder': autoencoder}


def get_objective(name: str) -> Callable[..., dict[str, jax.Array]]:
    """The per-example objective called `name`.

    Raises:
        ValueError: naming the allowed objectives.
    """
    if name not in OBJECTIVES:
        raise ValueError(f'objective={name!r} is not one of {tuple(OBJECTIVES)}.')
    return OBJECTIVES[name]


def model_autoencoder(key: jax.Array, model: LatentModel, **unused_kwargs) -> dict[str, jax.Array]:
    """`autoencoder` for a `LatentModel`; defined only for a one-layer model.

    Raises:
        ValueError: the model is not one stochastic layer given as encode/decode.
    """
    if model.one_layer is None:
        raise ValueError(
            "objective='autoencoder' needs a one-layer encode/decode model (a point-mass code); "
            'this model has no one-layer form. Allowed objectives: elbo, iwae.'
        )
    one = model.one_layer
    return autoencoder(key, model.x, lambda x: one.q, one.decode)


@dataclasses.dataclass(frozen=True)
class Objective:
    """An objective as the train step runs it.

    A per-example objective is `fn(key, model: LatentModel, **options) -> dict of []` for ONE
    example; the step vmaps it over the batch (so write it for one example). A batch-level
    objective (one that needs the other examples of the minibatch, e.g. beta-TCVAE's
    minibatch-weighted sampling) is
    `fn(keys [B], bind, images [B, *event], labels [B], **options) -> dict of [B]` (one key per
    example), where `bind(x, y) -> LatentModel` binds one example (vmap it as needed, with
    `axis_name='batch'` for BatchNorm models); the step calls it once per batch.
    Either way the step averages the [B] terms, so the loop has one code path.

    Attributes:
        fn: the objective.
        per_example: which of the two signatures `fn` has.
        options: names of the step options it takes, out of 'beta', 'k_samples', 'estimator',
            'analytic_kl', 'kl_samples', 'free_bits' and the zoo's 'miwae_m', 'ciwae_beta',
            'piwae_m', 'tcvae_alpha', 'tcvae_gamma', 'tcvae_estimator', 'dataset_size'
            (`steps.StepConfig.objective_fn`).
    """

    fn: Callable[..., dict[str, jax.Array]]
    per_example: bool = True
    options: tuple[str, ...] = ('beta', 'k_samples')


MODEL_OBJECTIVES: dict[str, Objective] = {
    'elbo': Objective(
        model_elbo, options=('beta', 'k_samples', 'analytic_kl', 'kl_samples', 'free_bits')
    ),
    'iwae': Objective(model_iwae, options=('beta', 'k_samples', 'estimator')),
    'autoencoder': Objective(model_autoencoder, options=()),
}


def get_model_objective(name: str) -> Objective:
    """The `Objective` called `name` (config key `objective`): these and `zoo_objectives`'.

    Raises:
        ValueError: naming the allowed objectives.
    """
    from vae_jax import zoo_objectives  # imported here: it builds on this module

    objectives = {**MODEL_OBJECTIVES, **zoo_objectives.MODEL_OBJECTIVES}
    if name not in objectives:
        raise ValueError(f'objective={name!r} is not one of {tuple(objectives)}.')
    return objectives[name]


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
