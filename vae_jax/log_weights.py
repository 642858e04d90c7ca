"""Objectives over log-weights: the `LatentModel` of one example and the ELBO, IWAE, autoencoder.

A latent-variable model of one example, its parameters bound, is a `LatentModel`: a sampler of
z ~ q(z|x) and the three log-densities whose sum is the log-weight
log w = log p(x|z) + log p(z) - log q(z|x). Every objective here is a function of such a model
(any number of stochastic layers); `one_layer_model` wraps encode/decode closures, and
`vae_jax.losses` holds the one-layer API over them. `OBJECTIVES` declares the ELBO, IWAE and
the autoencoder with their options for the registry (`vae_jax.objectives`).
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import bounds, distributions, divergences, registry

ESTIMATORS = ('reparam', 'stl', 'dreg')


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


def is_zero(value) -> bool:
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
        return divergences.log_prob_of_samples(dist, z)

    return LatentModel(
        x=x,
        sample=lambda key, k: q.sample(seed=key, sample_shape=k),
        log_q=log_q,
        log_likelihood=lambda z: _log_likelihood(decode, z, x),
        log_prior=lambda z: divergences.log_prob_of_samples(prior, z),
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
    use_free_bits = not is_zero(free_bits)
    one = model.one_layer
    if use_free_bits and (one is None or not one.standard_prior or not analytic_kl):
        raise ValueError(
            f'free_bits={free_bits} needs the analytic per-dimension KL against N(0, I): '
            f'use analytic_kl=True, one stochastic layer and the default prior (got '
            f'analytic_kl={analytic_kl}, one layer={one is not None}, '
            f'standard prior={one is not None and one.standard_prior}).'
        )
    kl = divergences.closed_form_kl(one.q, one.prior) if (analytic_kl and one is not None) else None
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
        kl_dims = divergences.kl_per_dimension(one.q)  # [D]
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


def model_autoencoder(key: jax.Array, model: LatentModel, **unused_kwargs) -> dict[str, jax.Array]:
    """Deterministic autoencoder loss for one example: -log p(x | z = mean of q(z|x)).

    Defined for a one-layer model only (the code is the posterior's mean, e.g. of the 'delta'
    posterior); `losses.autoencoder` is the same for encode/decode closures.

    Args:
        key: unused (kept for a uniform objective signature).
        model: one example's model, with `one_layer` set.
        **unused_kwargs: beta, k_samples, ... are accepted and ignored.

    Returns:
        {'loss': recon, 'recon': -log p(x|z), 'mse': sum (mean of p(x|z) - x)^2}, all [].

    Raises:
        ValueError: the model is not one stochastic layer given as encode/decode; shape
            mismatches between x and p(x|z).
    """
    del key, unused_kwargs
    if model.one_layer is None:
        raise ValueError(
            "objective='autoencoder' needs a one-layer encode/decode model (a point-mass code); "
            'this model has no one-layer form. Allowed objectives: elbo, iwae.'
        )
    x = model.x
    z = model.one_layer.q.mean()[None]  # [1, D]: decode keeps its [K, D] -> batch [K] convention.
    px = model.one_layer.decode(z)
    if tuple(px.event_shape) != x.shape or tuple(px.batch_shape) != (1,):
        raise ValueError(
            f'decode(z) for z of shape {z.shape} returned a likelihood with event shape '
            f'{tuple(px.event_shape)} and batch shape {tuple(px.batch_shape)}, but x has shape '
            f'{x.shape}: expected event shape {x.shape} and batch shape (1,).'
        )
    recon = -px.log_prob(x[None])[0]
    return {'loss': recon, 'recon': recon, 'mse': jnp.sum(jnp.square(px.mean()[0] - x))}


# ---------------------------------------------------------------------------------------------
# Registry declarations (vae_jax.objectives): each option once, shared by the objectives here
# and in iw_objectives.

K_SAMPLES = registry.integer(
    'k_samples', 'k_samples', 1, 1, "samples per example: IWAE k, the ELBO's k (static)"
)
ANALYTIC_KL = registry.boolean(
    'analytic_kl', 'analytic_kl', True, 'closed-form KL where one exists, else Monte Carlo'
)
KL_SAMPLES = registry.integer(
    'kl_samples', 'kl_samples', 1, 1, 'Monte-Carlo KL samples when analytic_kl is False (static)'
)
FREE_BITS = registry.number(
    'free_bits',
    'free_bits',
    0.0,
    lambda v: v >= 0,
    'a finite number >= 0 (nats per latent dim)',
    'minimum KL (nats) per latent dimension in the loss',
    exclusive=True,
)
ESTIMATOR = registry.choice(
    'estimator',
    'gradient_estimator',
    'reparam',
    ESTIMATORS,
    "IWAE's gradient estimator: reparameterised, sticking the landing or doubly reparameterised",
    exclusive=True,
)


def _check_elbo(config: Any) -> None:
    """Free bits act on the analytic per-dimension KL."""
    if config.free_bits > 0 and not config.analytic_kl:
        raise ValueError(
            f'config.free_bits={config.free_bits!r} applies only when analytic_kl=True (free '
            'bits act on the analytic KL per dimension; here analytic_kl=False); '
            'allowed here: 0.0'
        )


OBJECTIVES = (
    registry.Objective(
        'elbo',
        model_elbo,
        (K_SAMPLES, ANALYTIC_KL, KL_SAMPLES, FREE_BITS),
        check=_check_elbo,
        doc='negative (beta-)ELBO: recon + beta KL (Kingma & Welling 2014; Higgins et al. 2017)',
    ),
    registry.Objective(
        'iwae',
        model_iwae,
        (K_SAMPLES, ESTIMATOR),
        doc='negative (beta-)IWAE-k bound, reparam | stl | dreg gradients (Burda et al. 2016)',
    ),
    registry.Objective(
        'autoencoder',
        model_autoencoder,
        inputs=(),
        doc='deterministic autoencoder: -log p(x | z = mean of q(z|x))',
    ),
)
