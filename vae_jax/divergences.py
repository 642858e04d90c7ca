"""KL divergences between distrax distributions: closed form where registered, else Monte Carlo."""

import distrax
import jax
import jax.numpy as jnp


def closed_form_kl(q: distrax.Distribution, p: distrax.Distribution):
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
        kl = closed_form_kl(q, p)
        if kl is not None:
            return kl
    if key is None:
        raise ValueError(
            f'KL({q.name} || {p.name}) needs a Monte-Carlo estimate (analytic={analytic}), '
            'so kl_divergence needs a key.'
        )
    z = q.sample(seed=key, sample_shape=num_samples)
    return jnp.mean(log_prob_of_samples(q, z) - log_prob_of_samples(p, z), axis=0)


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


def log_prob_of_samples(d: distrax.Distribution, z: jax.Array) -> jax.Array:
    """log d(z_n) for samples z [N, *batch, *event] -> [N, *batch].

    vmapped over the sample axis because distrax broadcasts [N, D] against loc [D] by implicit
    rank promotion, which jax_numpy_rank_promotion='raise' (our tests) rejects.
    """
    return jax.vmap(d.log_prob)(z)
