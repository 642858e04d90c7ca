"""beta-TCVAE: the KL term of the ELBO split into MI, TC and dimension-wise KL, per minibatch.

The aggregate posterior q(z) = (1/N) sum_n q(z | x_n) over a data set of N examples has no
closed form; it is estimated from the other examples of the minibatch, so this objective is
batch-level (it takes the whole batch, unlike the per-example objectives of `losses`). For
sample i (z_i ~ q(z | x_i)) and the batch's diagonal Gaussian posteriors q(. | x_j):

    log q(z_i)            ~= logsumexp_j [log q(z_i | x_j) + log v_ij]
    log prod_d q(z_id)    ~= sum_d logsumexp_j [log q(z_id | x_j) + log v_ij]

with importance weights v_ij (each row sums to one, so both are density estimates):
- 'mws' (minibatch-weighted sampling): v_ii = 1/N, v_ij = (N - 1) / (N (B - 1)) for j != i.
  z_i was drawn from q(. | x_i), one of the N examples; the other B - 1 stand in uniformly for
  the remaining N - 1. Chen et al. print the weights as 1/(N B) for every j: those sum to 1/N,
  which shifts log q(z) by -log N and log prod_d q(z_d) by -D log N. Gradients are unchanged,
  but the reported MI would be inflated by log N and TC by (D - 1) log N; we normalise.
- 'mss' (minibatch stratified sampling, Chen et al. Appendix C.2): with M = B - 1,
  v_ii = 1/N, v_i,i+1 = (N - M) / (N M) (cyclically), v_ij = 1/M otherwise.

Per sample, with p(z) = N(0, I) (factorised, so its per-dimension terms exist):

    MI_i   = log q(z_i | x_i) - log q(z_i)                 index-code mutual information
    TC_i   = log q(z_i) - log prod_d q(z_id)               total correlation
    DWKL_i = log prod_d q(z_id) - log p(z_i)               dimension-wise KL

MI_i + TC_i + DWKL_i = log q(z_i | x_i) - log p(z_i), the one-sample Monte-Carlo KL of the ELBO,
exactly, whatever the estimator. The loss is recon + alpha MI + beta TC + gamma DWKL (batch
means); alpha = beta = gamma = 1 is the one-sample ELBO (negated).

`model_beta_tcvae` is the objective over a model (a batch-level `registry.Objective`), declared
with its options in `OBJECTIVES` for the registry (`vae_jax.objectives`) as 'beta_tcvae'.

References: Chen et al., 2018 ("Isolating sources of disentanglement in VAEs").
"""

import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import log_weights, registry

ESTIMATORS = ('mws', 'mss')
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _log_normal_terms(z, loc, scale):
    """Elementwise log N(z; loc, scale^2), broadcasting as given."""
    return -0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - _HALF_LOG_2PI


def log_importance_weight_matrix(batch_size: int, dataset_size: int, estimator: str) -> np.ndarray:
    """log v_ij of the aggregate-posterior estimators (rows sum to one).

    Args:
        batch_size: B >= 2 (static).
        dataset_size: N >= B, the number of training examples.
        estimator: 'mws' | 'mss'.

    Returns:
        [B, B] float32 numpy array of log-weights.

    Raises:
        ValueError: unknown estimator, B < 2 or N < B.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f'tcvae_estimator={estimator!r} is not one of {ESTIMATORS}.')
    if batch_size < 2:
        raise ValueError(f'beta-TCVAE needs a batch of at least 2 examples, got {batch_size}.')
    if dataset_size < batch_size:
        raise ValueError(
            f'tcvae_dataset_size={dataset_size} must be at least the batch size {batch_size}.'
        )
    n, m = float(dataset_size), float(batch_size - 1)
    rows = np.arange(batch_size)
    if estimator == 'mws':
        weights = np.full((batch_size, batch_size), (n - 1) / (n * m))
    else:
        weights = np.full((batch_size, batch_size), 1 / m)
        weights[rows, (rows + 1) % batch_size] = (n - m) / (n * m)
    weights[rows, rows] = 1 / n
    return np.log(weights).astype(np.float32)  # every weight > 0 since N >= B


def decompose(
    z: jax.Array,
    loc: jax.Array,
    scale: jax.Array,
    *,
    dataset_size: int,
    estimator: str = 'mws',
) -> dict[str, jax.Array]:
    """Per-sample log-densities of the beta-TCVAE decomposition.

    Args:
        z: [B, D] one sample per example, z_i ~ q(z | x_i).
        loc: [B, D] means of the batch's diagonal Gaussian posteriors.
        scale: [B, D] their standard deviations (> 0).
        dataset_size: N, the training set size (static).
        estimator: 'mws' | 'mss'.

    Returns:
        {'log_q_zx': log q(z_i | x_i), 'log_qz': log q(z_i), 'log_prod_qz': log prod_d q(z_id),
         'log_pz': log N(z_i; 0, I)}, each [B].

    Raises:
        ValueError: shapes that differ or are not [B, D]; bad estimator, B or N.
    """
    if z.ndim != 2 or z.shape != loc.shape or z.shape != scale.shape:
        raise ValueError(
            f'beta-TCVAE needs z, loc and scale of one shape [B, D]; got z {z.shape}, '
            f'loc {loc.shape}, scale {scale.shape}.'
        )
    batch_size = z.shape[0]
    log_v = jnp.asarray(log_importance_weight_matrix(batch_size, dataset_size, estimator))
    # [B_i, B_j, D]: log q(z_id | x_j) for every pair of the batch.
    pair = _log_normal_terms(z[:, None, :], loc[None, :, :], scale[None, :, :])
    rows = jnp.arange(batch_size)
    log_q_zx = jnp.sum(pair[rows, rows], axis=-1)
    log_qz = jax.nn.logsumexp(jnp.sum(pair, axis=-1) + log_v, axis=1)
    log_prod_qz = jnp.sum(jax.nn.logsumexp(pair + log_v[:, :, None], axis=1), axis=-1)
    log_pz = jnp.sum(_log_normal_terms(z, 0.0, 1.0), axis=-1)
    return {'log_q_zx': log_q_zx, 'log_qz': log_qz, 'log_prod_qz': log_prod_qz, 'log_pz': log_pz}


def tcvae(
    log_px: jax.Array,
    z: jax.Array,
    loc: jax.Array,
    scale: jax.Array,
    *,
    dataset_size: int,
    alpha: float | jax.Array = 1.0,
    beta: float | jax.Array = 1.0,
    gamma: float | jax.Array = 1.0,
    estimator: str = 'mws',
) -> dict[str, jax.Array]:
    """Negative beta-TCVAE objective of a minibatch (batch means).

    Args:
        log_px: [B] log p(x_i | z_i).
        z: [B, D] one sample per example from its posterior.
        loc: [B, D] posterior means.
        scale: [B, D] posterior standard deviations.
        dataset_size: N, the training set size (static).
        alpha: weight on the index-code mutual information (may be traced).
        beta: weight on the total correlation (may be traced).
        gamma: weight on the dimension-wise KL (may be traced).
        estimator: 'mws' | 'mss'.

    Returns:
        {'loss': recon + alpha mi + beta tc + gamma dwkl, 'recon': -mean log p(x|z),
         'mi', 'tc', 'dwkl': the three estimated terms, 'kl': mi + tc + dwkl (one-sample
         Monte-Carlo KL), 'elbo': -(recon + kl)}, all [] float32.

    Raises:
        ValueError: log_px is not [B] for z [B, D]; see `decompose`.

    References: Chen et al., 2018.
    """
    if log_px.shape != z.shape[:1]:
        raise ValueError(f'log_px must be [B] = {z.shape[:1]} for z {z.shape}, got {log_px.shape}.')
    terms = decompose(z, loc, scale, dataset_size=dataset_size, estimator=estimator)
    per_example = objective_terms(log_px, terms, alpha=alpha, beta=beta, gamma=gamma)
    return {name: jnp.mean(value) for name, value in per_example.items()}


def objective_terms(
    log_px: jax.Array,
    terms: dict[str, jax.Array],
    *,
    alpha: float | jax.Array,
    beta: float | jax.Array,
    gamma: float | jax.Array,
) -> dict[str, jax.Array]:
    """Per-example beta-TCVAE loss and terms from `decompose`'s log densities.

    Args:
        log_px: [B] log p(x_i | z_i).
        terms: `decompose`'s {'log_q_zx', 'log_qz', 'log_prod_qz', 'log_pz'}, each [B].
        alpha, beta, gamma: weights on MI, TC and the dimension-wise KL (may be traced).

    Returns:
        {'loss', 'recon', 'mi', 'tc', 'dwkl', 'kl' (= mi + tc + dwkl), 'elbo'}, each [B].
    """
    mi = terms['log_q_zx'] - terms['log_qz']
    tc = terms['log_qz'] - terms['log_prod_qz']
    dwkl = terms['log_prod_qz'] - terms['log_pz']
    recon = -log_px
    kl = mi + tc + dwkl
    return {
        'loss': recon + alpha * mi + beta * tc + gamma * dwkl,
        'recon': recon,
        'mi': mi,
        'tc': tc,
        'dwkl': dwkl,
        'kl': kl,
        'elbo': -(recon + kl),
    }


def model_beta_tcvae(
    keys: jax.Array,
    bind: Callable[[jax.Array, jax.Array | None], log_weights.LatentModel],
    images: jax.Array,
    labels: jax.Array | None,
    *,
    beta: float | jax.Array = 1.0,
    tcvae_alpha: float | jax.Array = 1.0,
    tcvae_gamma: float | jax.Array = 1.0,
    tcvae_estimator: str = 'mws',
    dataset_size: int = 0,
) -> dict[str, jax.Array]:
    """beta-TCVAE terms of a batch (one sample per example), per example.

    The aggregate-posterior estimates use every example of the batch (`decompose`);
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
    parts = decompose(z, loc, scale, dataset_size=dataset_size, estimator=tcvae_estimator)
    return objective_terms(log_px, parts, alpha=tcvae_alpha, beta=beta, gamma=tcvae_gamma)


# ---------------------------------------------------------------------------------------------
# Registry declarations (vae_jax.objectives).

TCVAE_ALPHA = registry.number(
    'tcvae_alpha',
    'tcvae_alpha',
    1.0,
    lambda v: v >= 0,
    'a finite number >= 0',
    'weight on the index-code mutual information',
)
TCVAE_GAMMA = registry.number(
    'tcvae_gamma',
    'tcvae_gamma',
    1.0,
    lambda v: v >= 0,
    'a finite number >= 0',
    'weight on the dimension-wise KL',
)
TCVAE_ESTIMATOR = registry.choice(
    'tcvae_estimator',
    'tcvae_estimator',
    'mws',
    ESTIMATORS,
    "aggregate-posterior estimator: 'mws' (minibatch weighted) | 'mss' (stratified)",
)


def _check_batch_size(config: Any) -> None:
    if config.input.batch_size < 2:
        raise ValueError(
            f'config.input.batch_size={config.input.batch_size}: beta_tcvae estimates the '
            'aggregate posterior from the other examples of the batch; allowed: >= 2'
        )


OBJECTIVES = (
    registry.Objective(
        'beta_tcvae',
        model_beta_tcvae,
        (TCVAE_ALPHA, TCVAE_GAMMA, TCVAE_ESTIMATOR),
        per_example=False,
        inputs=('beta', 'dataset_size'),
        check=_check_batch_size,
        doc='negative beta-TCVAE: recon + alpha MI + beta TC + gamma dimension-wise KL',
    ),
)
