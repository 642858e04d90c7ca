"""Test-set evaluation: importance-sampled NLL, IWAE bounds, ELBO, bits/dim, active units.

Everything is written against the per-example closures of the losses contract, `bind(y) ->
(encode, decode)`, so it runs with any model and is testable with toy models whose log p(x) is
known in closed form.

The NLL follows Burda et al. (2016): log p(x) is estimated by the IWAE bound with k = 5000
importance samples from q(z|x). The samples are processed in chunks with a running log-sum-exp
(`lax.scan`), so memory is O(batch_size * chunk_size) whatever k is, and examples are vectorised
with `vmap`. Importance sample i of an example is drawn from `fold_in(key, i)`, so the estimate is
the same (up to float summation order) for every chunk size; the chunk size is a memory/speed knob
only. Example n of a data set uses `fold_in(key, n)`, so nothing depends on the batch size either.

Defaults (`CHUNK_SIZE`, `BATCH_SIZE`) were chosen by measurement with
`benchmarks/eval_nll_benchmark.py` (IWAE-paper MLP 784-200-200-50, k = 5000, 10 000 examples:
854 CPU-s, 594 MiB peak RSS on 2 CPU cores; see that file for the numbers). On CPU the speed is
flat over batch_size * chunk_size from 2 000 to 25 000 samples per scan step, and memory grows
with it, so the defaults sit at 10 000. On an accelerator, raise batch_size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions, losses, steps

Array = jax.Array

CHUNK_SIZE = 500  # importance samples per scan step
BATCH_SIZE = 20  # examples per jitted call (vmapped)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016), Sec. 5.2
# Draws per example for E_q[z|x] of a several-layer model when no NLL is computed: the
# Monte-Carlo error adds ~Var_q / 2000 <= 0.0005 to a unit's activity, 1/20 of the threshold.
MEAN_SAMPLES = 2000
# 'ess_k{K}' (K = the largest eval k, if any): the effective sample size of the K importance
# weights of iwae_k{K}'s own pass (running sums of w and w^2: no second pass over the samples).


def _log_weights(
    key: Array,
    indices: Array,
    x: Array,
    q: distrax.Distribution,
    decode: Callable[[Array], distrax.Distribution],
    prior: distrax.Distribution,
) -> Array:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i drawn from fold_in(key, i).

    Args:
      key: the example's importance-sampling key.
      indices: [C] int, global indices of the importance samples.
      x: [*event] one example.
      q: the posterior q(z|x), event [D].
      decode: z [C, D] -> p(x|z) with batch [C].
      prior: p(z), event [D].

    Returns:
      [C] log importance weights.
    """
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    z = jax.vmap(lambda k: q.sample(seed=k))(keys)  # [C, D]
    # vmap, not broadcasting: distrax broadcasts [C, D] against loc [D] by implicit rank
    # promotion, which jax_numpy_rank_promotion='raise' rejects.
    log_q = jax.vmap(q.log_prob)(z)
    log_pz = jax.vmap(prior.log_prob)(z)
    log_px = decode(z).log_prob(jnp.broadcast_to(x, (indices.shape[0],) + x.shape))
    return log_px + log_pz - log_q


def log_importance_weights(
    key: Array,
    x: Array,
    encode: Callable[[Array], distrax.Distribution],
    decode: Callable[[Array], distrax.Distribution],
    *,
    k_samples: int,
    prior: distrax.Distribution | None = None,
) -> Array:
    """All k log importance weights of one example at once (no chunking).

    Draws exactly the samples `log_likelihood` draws for the same key, so it is the unchunked
    reference for it, and the weights give diagnostics such as the effective sample size.

    Args:
      key: importance-sampling key; sample i uses fold_in(key, i).
      x: [*event] one example.
      encode: x -> q(z|x), event [D].
      decode: z [K, D] -> p(x|z), batch [K], event [*event].
      k_samples: K, static.
      prior: p(z), event [D]; default N(0, I).

    Returns:
      [K] log w_i = log p(x, z_i) - log q(z_i|x).
    """
    q = encode(x)
    prior = distributions.standard_normal_prior(q.event_shape[-1]) if prior is None else prior
    return _log_weights(key, jnp.arange(k_samples), x, q, decode, prior)


def log_likelihood(
    key: Array,
    x: Array,
    encode: Callable[[Array], distrax.Distribution],
    decode: Callable[[Array], distrax.Distribution],
    *,
    k_samples: int,
    chunk_size: int = CHUNK_SIZE,
    prior: distrax.Distribution | None = None,
) -> Array:
    """Importance-sampled log p(x) of one example: the k-sample IWAE bound, chunked.

    log p(x) ~= logsumexp_i(log w_i) - log k, accumulated over chunks of `chunk_size` samples with
    a running log-sum-exp inside `lax.scan`, so memory is O(chunk_size) for any k. When k is not a
    multiple of chunk_size, the last chunk's surplus samples are masked to -inf, so exactly k
    samples count. Sample i comes from fold_in(key, i): the value does not depend on chunk_size.

    Args:
      key: importance-sampling key.
      x: [*event] one example.
      encode: x -> q(z|x), event [D].
      decode: z [C, D] -> p(x|z), batch [C], event [*event]; called once per chunk.
      k_samples: k >= 1, static (Burda et al. use 5000 for the test NLL).
      chunk_size: samples per scan step, static; memory/speed only.
      prior: p(z), event [D]; default N(0, I).

    Returns:
      [] the estimate of log p(x) (a stochastic lower bound in expectation).

    Raises:
      ValueError: if k_samples or chunk_size is not positive.

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
    """
    return _log_likelihood_and_ess(key, x, encode, decode, k_samples, chunk_size, prior)[0]


def _log_likelihood_and_ess(key, x, encode, decode, k_samples, chunk_size, prior):
    """`log_likelihood` and the effective sample size of the same k weights: ([], [])."""
    if k_samples < 1 or chunk_size < 1:
        raise ValueError(f'k_samples and chunk_size must be >= 1, got {k_samples}, {chunk_size}')
    q = encode(x)
    prior = distributions.standard_normal_prior(q.event_shape[-1]) if prior is None else prior
    chunk_size = min(chunk_size, k_samples)
    num_chunks = -(-k_samples // chunk_size)

    def body(totals, chunk_index):
        indices = chunk_index * chunk_size + jnp.arange(chunk_size)
        log_w = _log_weights(key, indices, x, q, decode, prior)
        log_w = jnp.where(indices < k_samples, log_w, -jnp.inf)
        return _add_log_sums(totals, log_w), None

    init = (jnp.full((), -jnp.inf, jnp.float32),) * 2
    totals, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return totals[0] - jnp.log(float(k_samples)), _ess(totals)


def _add_log_sums(totals, log_w):
    """Running (log sum w, log sum w^2) over chunks; logaddexp is stable for any magnitude."""
    return (
        jnp.logaddexp(totals[0], jax.nn.logsumexp(log_w)),
        jnp.logaddexp(totals[1], jax.nn.logsumexp(2.0 * log_w)),
    )


def _ess(totals):
    """(sum w)^2 / sum w^2 from the running log sums (as `bounds.ess`, without a second pass)."""
    return jnp.exp(2.0 * totals[0] - totals[1])


def model_log_likelihood(
    key: Array,
    model: losses.LatentModel,
    *,
    k_samples: int,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Array, Any]:
    """`log_likelihood` for any `losses.LatentModel` (a latent pytree, several layers).

    Sample i is `model.sample(fold_in(key, i), 1)`, so for a one-layer model bound with
    `losses.one_layer_model` the samples, and the estimate, are those of `log_likelihood`. A
    model with `sample_and_log_q` gives each sample's log q from the same pass.

    Args:
      key: importance-sampling key.
      model: one example's model.
      k_samples: k >= 1, static.
      chunk_size: samples per scan step, static; memory/speed only.

    Returns:
      ([] the estimate of log p(x), the mean of the k samples of every latent: z's structure
      without the sample axis, e.g. {'z1': [D1], 'z2': [D2]}; an unbiased estimate of E_q[z|x]).

    Raises:
      ValueError: if k_samples or chunk_size is not positive.

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
    """
    estimate, means, _ = _model_log_likelihood_and_ess(key, model, k_samples, chunk_size)
    return estimate, means


def _model_log_likelihood_and_ess(key, model, k_samples, chunk_size):
    """`model_log_likelihood` plus the effective sample size of the same k weights."""
    if k_samples < 1 or chunk_size < 1:
        raise ValueError(f'k_samples and chunk_size must be >= 1, got {k_samples}, {chunk_size}')
    chunk_size = min(chunk_size, k_samples)
    num_chunks = -(-k_samples // chunk_size)

    def draw(sample_key):
        # One pass for z and log q when the model has it; else log q is scored per chunk.
        if model.sample_and_log_q is None:
            return jax.tree.map(lambda leaf: leaf[0], model.sample(sample_key, 1)), None
        z, log_qz = losses.sample_with_log_q(sample_key, model, 1)
        return jax.tree.map(lambda leaf: leaf[0], z), log_qz[0]

    def body(carry, chunk_index):
        totals, sums = carry
        indices = chunk_index * chunk_size + jnp.arange(chunk_size)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
        z, log_qz = jax.vmap(draw)(keys)  # leaves [C, ...], [C] (or None)
        if log_qz is None:
            log_qz = model.log_q(z, False)
        log_w = model.log_likelihood(z) + model.log_prior(z) - log_qz
        valid = indices < k_samples
        log_w = jnp.where(valid, log_w, -jnp.inf)

        def add(s, leaf):
            mask = valid.reshape(valid.shape + (1,) * (leaf.ndim - 1))
            return s + jnp.sum(jnp.where(mask, leaf, 0.0), axis=0)

        return (_add_log_sums(totals, log_w), jax.tree.map(add, sums, z)), None

    z_shape, _ = jax.eval_shape(draw, key)
    sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), z_shape)
    init = ((jnp.full((), -jnp.inf, jnp.float32),) * 2, sums)
    (totals, sums), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    means = jax.tree.map(lambda s: s / k_samples, sums)
    return totals[0] - jnp.log(float(k_samples)), means, _ess(totals)


def _model_example_metrics(
    key: Array,
    model: losses.LatentModel,
    *,
    k_list: tuple[int, ...],
    nll_k: int,
    chunk_size: int,
) -> dict[str, Array]:
    """Per-example quantities through the log-weights of any model.

    'posterior_mean' [D] (one-layer models: the exact mean of q) or 'posterior_mean/<latent>'
    (otherwise: the mean of the NLL's importance samples, or of MEAN_SAMPLES draws when there
    is no NLL, so active units are counted per stochastic layer).
    """
    elbo_key, nll_key, mean_key, *iwae_keys = jax.random.split(key, 3 + len(k_list))
    terms = losses.model_elbo(elbo_key, model, analytic_kl=True)
    out = {name: terms[name] for name in ('elbo', 'recon', 'kl')}
    for k, iwae_key in zip(k_list, iwae_keys, strict=True):
        out[f'iwae_k{k}'], _, ess = _model_log_likelihood_and_ess(iwae_key, model, k, chunk_size)
        if k == max(k_list):
            out[f'ess_k{k}'] = ess
    if nll_k:
        out['log_px'], means = model_log_likelihood(
            nll_key, model, k_samples=nll_k, chunk_size=chunk_size
        )
    else:
        means = None
    one = model.one_layer
    if one is not None:
        out['posterior_mean'] = one.q.mean()
        out['recon_error'] = jnp.mean(
            jnp.square(one.decode(one.q.mean()[None]).mean()[0] - model.x)
        )
        return out
    if means is None:
        means = jax.tree.map(
            lambda leaf: jnp.mean(leaf, axis=0), model.sample(mean_key, MEAN_SAMPLES)
        )
    for name, mean in _named_leaves(means):
        out[f'posterior_mean/{name}'] = mean.reshape(-1)
    return out


def _named_leaves(tree: Any) -> list[tuple[str, Array]]:
    """[(name, leaf)] with names like 'z1' for a dict of latents."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [
        ('.'.join(str(getattr(p, 'key', getattr(p, 'idx', p))) for p in path), leaf)
        for path, leaf in leaves
    ]


def active_units(
    posterior_means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> tuple[int, np.ndarray]:
    """Active latent units (Burda et al. 2016): Var_x(E_q[z_d | x]) > threshold.

    Args:
      posterior_means: [N, D] posterior means over a data set.
      threshold: activity threshold (0.01 in the paper).

    Returns:
      (number of active units, variances [D] float64 over the N examples).
    """
    means = np.asarray(posterior_means, np.float64)
    if means.ndim != 2:
        raise ValueError(f'posterior_means must be [N, D], got shape {means.shape}')
    variances = means.var(axis=0)
    return int(np.sum(variances > threshold)), variances


def _example_metrics(
    key: Array,
    x: Array,
    encode: Callable[[Array], distrax.Distribution],
    decode: Callable[[Array], distrax.Distribution],
    *,
    k_list: tuple[int, ...],
    nll_k: int,
    chunk_size: int,
) -> dict[str, Array]:
    """All per-example quantities: scalars, 'kl_per_dim' [D] and 'posterior_mean' [D].

    A point-mass posterior (the autoencoder's 'delta') has no ELBO, KL or importance-sampled
    bound; its 'recon' is -log p(x|z) at the code and the bound-type entries are absent.
    """
    q = encode(x)
    mean = q.mean()
    out = {'posterior_mean': mean}
    # One decode at the posterior mean, with the [1, D] -> batch [1] convention of the losses.
    out['recon_error'] = jnp.mean(jnp.square(decode(mean[None]).mean()[0] - x))
    if not _is_gaussian(q):
        out['recon'] = losses.autoencoder(key, x, encode, decode)['recon']
        return out
    elbo_key, nll_key, *iwae_keys = jax.random.split(key, 2 + len(k_list))
    terms = losses.elbo(elbo_key, x, encode, decode, analytic_kl=True)
    out.update({name: terms[name] for name in ('elbo', 'recon', 'kl')})
    for k, iwae_key in zip(k_list, iwae_keys, strict=True):
        out[f'iwae_k{k}'], ess = _log_likelihood_and_ess(
            iwae_key, x, encode, decode, k, chunk_size, None
        )
        if k == max(k_list):
            out[f'ess_k{k}'] = ess
    if nll_k:
        out['log_px'] = log_likelihood(
            nll_key, x, encode, decode, k_samples=nll_k, chunk_size=chunk_size
        )
    # Marginal KLs: they sum to the KL for a diagonal q; for a full-covariance q the sum is
    # <= the KL (the gap is q's total correlation).
    out['kl_per_dim'] = losses.kl_per_dimension(q)
    return out


def _is_gaussian(q: distrax.Distribution) -> bool:
    return isinstance(q, distrax.MultivariateNormalFromBijector)


def _evaluate_batch(
    variables: Any,
    key: Array,
    indices: Array,
    images: Array,
    labels: Array | None,
    *,
    bind: Callable[..., Any],
    k_list: tuple[int, ...],
    nll_k: int,
    chunk_size: int,
    dynamic_binarize: bool,
    has_labels: bool,
    model_fn: Callable[..., Any] | None = None,
) -> dict[str, Array]:
    """`_example_metrics` (or, with `model_fn`, `_model_example_metrics`) vmapped over a batch;
    example n uses fold_in(key, n)."""

    def per_example(index, x, y):
        bin_key, metrics_key = jax.random.split(jax.random.fold_in(key, index))
        if dynamic_binarize:
            x = jax.random.bernoulli(bin_key, x).astype(x.dtype)
        y = y if has_labels else None
        if model_fn is not None:
            return _model_example_metrics(
                metrics_key,
                model_fn(variables, x, y),
                k_list=k_list,
                nll_k=nll_k,
                chunk_size=chunk_size,
            )
        encode, decode = bind(y) if variables is None else bind(variables, y)
        return _example_metrics(
            metrics_key, x, encode, decode, k_list=k_list, nll_k=nll_k, chunk_size=chunk_size
        )

    if labels is None:
        labels = jnp.zeros(indices.shape, jnp.int32)
    return jax.vmap(per_example)(indices, images, labels)


def evaluate_dataset(
    key: Array,
    images: np.ndarray,
    labels: np.ndarray | None,
    bind: Callable[..., Any],
    variables: Any = None,
    *,
    k_list: Sequence[int] = (1, 10),
    nll_k: int = 5000,
    chunk_size: int = CHUNK_SIZE,
    batch_size: int = BATCH_SIZE,
    dynamic_binarize: bool = False,
    progress: Callable[[int, int], None] | None = None,
    return_per_example: bool = False,
    model_fn: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Evaluates a model on a data set: ELBO, IWAE bounds, NLL, active units.

    Every example is processed exactly once (the last batch is padded, then sliced), with its
    own key fold_in(key, n) for example n, so the numbers do not depend on `batch_size` or
    `chunk_size`. The batch function is jitted once per (bind, options); pass `variables` with a
    `bind(variables, y)` so a trainer evaluating new parameters does not recompile.

    Args:
      key: evaluation key (a fixed eval key makes runs comparable).
      images: [N, *event] float32 data in the likelihood's support ([0, 1] grey values when
        `dynamic_binarize`).
      labels: [N] int32, or None for unconditional models (bind then gets y=None).
      bind: y -> (encode, decode) (the losses contract; eval mode, parameters bound), or, when
        `variables` is given, (variables, y) -> (encode, decode).
      variables: optional pytree passed to `bind` as a jit argument.
      k_list: the k of the reported IWAE bounds 'iwae_k{k}'.
      nll_k: importance samples for 'nll' (Burda et al.: 5000); 0 skips it.
      chunk_size: importance samples per scan step (memory ~ batch_size * chunk_size).
      batch_size: examples per jitted call.
      dynamic_binarize: replace each image by a Bernoulli(image) draw from example n's key.
      progress: optional callback(num_done, num_total) after each batch.
      model_fn: (variables, x, y) -> `losses.LatentModel` (e.g. `steps.make_model_fn`): evaluate
        through the log-weights of any model (several stochastic layers, learned priors); then
        `bind` is unused and active units are also counted per layer ('active_units/<latent>').
      return_per_example: also return 'per_example': dict of numpy arrays over the N examples
        ('elbo', 'recon', 'kl', 'iwae_k{k}', 'log_px' [N]; 'kl_per_dim', 'posterior_mean'
        [N, D]; those that apply), e.g. for a latent scatter plot or per-example NLLs.

    Returns:
      dict of Python floats unless noted: 'num_examples' (int); 'elbo' (mean analytic-KL ELBO,
      nats), 'recon' (mean -E_q log p(x|z), 1 sample), 'kl' (mean KL(q||p)); 'iwae_k{k}' per k;
      'ess_k{K}' (mean effective sample size of K = max(k_list) importance weights, in [1, K]);
      'nll' (-mean log p(x) with nll_k samples; None if nll_k == 0; `bits_per_dim` turns it
      into bits per dimension where that is defined); 'recon_error' (mean
      over examples and data values of (E[x|z=mean q] - x)^2); 'kl_per_dim' (list [D], mean over
      examples of KL(q(z_d|x) || N(0, 1)); marginal KL for full-covariance posteriors);
      'active_units' (int) and 'posterior_mean_variance' (list [D], Var_x E_q[z_d|x]).

    Raises:
      ValueError: on an empty data set, mismatched label count or non-positive sizes.
    """
    images = np.asarray(images)
    n = images.shape[0]
    if n == 0:
        raise ValueError('evaluate_dataset got an empty data set')
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f'labels must be [N]={n}, got shape {np.shape(labels)}')
    if batch_size < 1 or chunk_size < 1 or nll_k < 0 or any(k < 1 for k in k_list):
        raise ValueError(
            f'need batch_size, chunk_size, k_list >= 1 and nll_k >= 0; got {batch_size}, '
            f'{chunk_size}, {tuple(k_list)}, {nll_k}'
        )
    batch_fn = functools.partial(
        _jitted_evaluate_batch(),
        bind=bind,
        k_list=tuple(int(k) for k in k_list),
        nll_k=int(nll_k),
        chunk_size=int(chunk_size),
        dynamic_binarize=bool(dynamic_binarize),
        has_labels=labels is not None,
        model_fn=model_fn,
    )
    batch_size = min(batch_size, n)
    collected: list[dict[str, np.ndarray]] = []
    pending = None
    for start in range(0, n, batch_size):
        # Pad the last batch with copies of the last example (one compile), sliced off below.
        idx = np.minimum(np.arange(start, start + batch_size), n - 1)
        out = batch_fn(
            variables,
            key,
            jnp.asarray(idx, jnp.int32),
            jnp.asarray(images[idx], jnp.float32),
            None if labels is None else jnp.asarray(np.asarray(labels)[idx], jnp.int32),
        )
        # Fetch the previous batch only after dispatching this one, to keep the device busy.
        if pending is not None:
            collected.append(_fetch(*pending, n, progress))
        pending = (out, start, batch_size)
    collected.append(_fetch(*pending, n, progress))
    per_example = {k: np.concatenate([c[k] for c in collected]) for k in collected[0]}
    summary = _summarise(per_example, images.shape[1:], tuple(k_list))
    if return_per_example:
        summary['per_example'] = per_example
    return summary


@functools.cache
def _jitted_evaluate_batch() -> Callable[..., Any]:
    """`_evaluate_batch`, jitted (built on first use, after the backend is set up)."""
    return jax.jit(
        _evaluate_batch,
        static_argnames=(
            'bind',
            'k_list',
            'nll_k',
            'chunk_size',
            'dynamic_binarize',
            'has_labels',
            'model_fn',
        ),
        compiler_options=steps.compiler_options(),
    )


def _fetch(out, start, batch_size, n, progress) -> dict[str, np.ndarray]:
    count = min(batch_size, n - start)
    host = {k: np.asarray(v)[:count] for k, v in jax.device_get(out).items()}
    if progress is not None:
        progress(start + count, n)
    return host


def _summarise(
    per_example: dict[str, np.ndarray],
    event_shape: tuple[int, ...],
    k_list: tuple[int, ...],
) -> dict[str, Any]:
    """Means over examples (float64) and the data-set level quantities; None where undefined."""

    def mean(name):
        if name not in per_example:
            return None
        return float(np.mean(per_example[name], dtype=np.float64))

    summary: dict[str, Any] = {'num_examples': int(per_example['recon'].shape[0])}
    for name in ('elbo', 'recon', 'kl', *(f'iwae_k{k}' for k in k_list)):
        summary[name] = mean(name)
    log_px = mean('log_px')
    summary['nll'] = None if log_px is None else -log_px
    summary['recon_error'] = mean('recon_error')
    for name in sorted(per_example):
        if name.startswith('ess_k'):
            summary[name] = mean(name)
    kl_per_dim = per_example.get('kl_per_dim')
    summary['kl_per_dim'] = (
        None if kl_per_dim is None else np.mean(kl_per_dim, axis=0, dtype=np.float64).tolist()
    )
    layers = {
        name.split('/', 1)[1]: values
        for name, values in per_example.items()
        if name.startswith('posterior_mean/')
    }
    if 'posterior_mean' in per_example:
        count, variances = active_units(per_example['posterior_mean'])
        summary['active_units'] = count
        summary['posterior_mean_variance'] = variances.tolist()
    else:  # Several stochastic layers: counted per layer (Burda et al. 2016, Table 2).
        per_layer = {name: active_units(values) for name, values in layers.items()}
        summary['active_units'] = sum(count for count, _ in per_layer.values())
        for name, (count, variances) in per_layer.items():
            summary[f'active_units/{name}'] = count
            summary[f'posterior_mean_variance/{name}'] = variances.tolist()
    return summary


DISCRETE_LIKELIHOODS = ('bernoulli',)
CONTINUOUS_LIKELIHOODS = ('gaussian', 'continuous_bernoulli')


def bits_per_dim(
    nll: float | None,
    *,
    likelihood: str,
    num_levels: int | None,
    num_dims: int,
    num_padding_dims: int = 0,
) -> dict[str, Any]:
    """The NLL in bits per dimension, only where it is a code length for the data's values.

    Defined in two cases (D = num_dims, the real pixels; padding never counts):
    - a discrete likelihood on binary data: bpd = nll / (D ln 2), exactly -log2 p(x) / D. With
      zero padding the NLL also pays for the padding pixels, -log p(x, pad) >= -log p(x), so
      the value is an upper bound on the code length of the real pixels.
    - a continuous likelihood on 8-bit data x = n / 255: the 256 cells [i / 256, (i + 1) / 256)
      partition [0, 1], and the probability of the 8-bit image n is the density's mass on its
      cell, P(n) = integral of p over the cell ~= p(x) (1/256)^D (the density at a point of the
      cell times the cell's volume). So -log2 P(n) / D = (nll + D ln 256) / (D ln 2), i.e.
      nll / (D ln 2) + 8. This is the usual dequantised number, but the models here are
      trained and evaluated on the grid points themselves (no uniform dequantisation noise), so
      it is a point approximation of P(n), not a bound: a density that peaks sharply at the grid
      points makes it too good (a negative value proves it: then it is undefined). The note
      says so.
    Undefined (absent, with the reason in the note): no NLL; real-valued data (toy sets: their
    NLL is a density in nats, not a code length); a continuous likelihood on binary data or on
    grids other than 8 bits; a continuous likelihood on zero-padded inputs (the padding's
    density is not a probability and would enter the NLL unbounded); unknown likelihoods.

    Args:
      nll: the mean -log p(x) in nats over the N examples, or None.
      likelihood: the likelihood's name, e.g. config.model.likelihood.
      num_levels: values a pixel takes (2 binary, 256 8-bit), None for real-valued data.
      num_dims: D, values per example excluding padding.
      num_padding_dims: zeros added per example by padding (their cost is in the NLL).

    Returns:
      {'bits_per_dim': float, 'bits_per_dim_note': str} where defined, else
      {'bits_per_dim_note': str} saying why not.
    """
    ln2 = math.log(2.0)
    if num_levels is None:  # First: with or without an NLL, real-valued data have no bits/dim.
        return {
            'bits_per_dim_note': 'undefined: the data are real-valued, so the NLL is a density '
            '(nats), not a code length'
        }
    if nll is None:
        return {'bits_per_dim_note': 'undefined: no NLL was estimated (nll_k = 0)'}
    if likelihood in DISCRETE_LIKELIHOODS and num_levels == 2:
        if nll < 0:  # An estimate of log p(x) > 0, impossible for probabilities <= 1.
            return {
                'bits_per_dim_note': f'undefined: the NLL estimate {nll:.4f} is negative, which '
                'no discrete likelihood can give; the estimate is wrong'
            }
        note = f'-log2 p(x) / D with D = {num_dims} pixels'
        if num_padding_dims:
            note += (
                f'; the NLL includes the {num_padding_dims} zero-padding pixels, so this is an '
                'upper bound on the code length of the real pixels'
            )
        return {'bits_per_dim': nll / (num_dims * ln2), 'bits_per_dim_note': note}
    if likelihood in CONTINUOUS_LIKELIHOODS and num_levels == 256 and not num_padding_dims:
        # P(8-bit image n) = mass of the density on n's cell ~= p(n / 255) * (1/256)^D, so
        # -log2 P = (nll + D ln 256) / ln 2 bits, divided by D.
        value = (nll + num_dims * math.log(256.0)) / (num_dims * ln2)
        if value < 0:  # P(n) > 1: the density spikes on the grid points.
            return {
                'bits_per_dim_note': f'undefined: (nll + D ln 256) / (D ln 2) = {value:.4f} < 0 '
                'for this model: its density at the 8-bit values exceeds 256^D, so the density '
                'times the cell volume is no approximation of the probability of the 8-bit image'
            }
        return {
            'bits_per_dim': value,
            'bits_per_dim_note': f'(nll + D ln 256) / (D ln 2) with D = {num_dims}: the density '
            'at the 8-bit value times the volume (1/256)^D of its cell; an approximation of the '
            'probability of the 8-bit image (no dequantisation noise in training), not a bound',
        }
    if likelihood in CONTINUOUS_LIKELIHOODS and num_levels == 256:
        reason = (
            f'a continuous likelihood on zero-padded inputs ({num_padding_dims} padding values '
            'whose density is not a probability)'
        )
    elif likelihood in CONTINUOUS_LIKELIHOODS:
        reason = (
            f'a continuous likelihood ({likelihood}) on data with {num_levels} levels (defined '
            'here for 8-bit data only)'
        )
    elif likelihood in DISCRETE_LIKELIHOODS:
        reason = f'a discrete likelihood ({likelihood}) on data with {num_levels} levels'
    else:
        reason = f'likelihood {likelihood!r} is not known to be discrete or continuous'
    return {'bits_per_dim_note': f'undefined: {reason}'}
