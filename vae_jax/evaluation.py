"""Test-set evaluation: importance-sampled NLL, IWAE bounds, ELBO, bits/dim, active units.

Everything is written against one example's model as log-weights (`losses.LatentModel`), the
form the train step binds every model to (`steps.make_model_fn`), so one code path evaluates the
built-in VAE, a hierarchy, a flow or a model of one's own; research code may pass the one-layer
closures `bind(y) -> (encode, decode)` instead (adapted once by `one_layer_model_fn`), which makes
it testable with toy models whose log p(x) is known in closed form.

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
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import backends, input_transform, losses
from vae_jax.bits import (  # noqa: F401 -- re-exported: evaluation.bits_per_dim
    CONTINUOUS_LIKELIHOODS,
    DISCRETE_LIKELIHOODS,
    bits_per_dim,
)

Array = jax.Array

CHUNK_SIZE = 500  # importance samples per scan step
BATCH_SIZE = 20  # examples per jitted call (vmapped)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016), Sec. 5.2
# Draws per example for E_q[z|x] of a several-layer model when no NLL is computed: the
# Monte-Carlo error adds ~Var_q / 2000 <= 0.0005 to a unit's activity, 1/20 of the threshold.
MEAN_SAMPLES = 2000
# 'ess_k{K}' (K = the largest eval k, if any): the effective sample size of the K importance
# weights of iwae_k{K}'s own pass (running sums of w and w^2: no second pass over the samples).


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
    model = losses.one_layer_model(x, encode, decode, prior)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(k_samples))
    z = jax.vmap(lambda k: model.sample(k, 1)[0])(keys)  # [K, D]
    return model.log_likelihood(z) + model.log_prior(z) - model.log_q(z, False)


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
    """Importance-sampled log p(x) of one example, given as one-layer closures.

    `model_log_likelihood` of `losses.one_layer_model(x, encode, decode, prior)`: the k-sample
    IWAE bound, chunked; sample i comes from fold_in(key, i), so the value does not depend on
    chunk_size.

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
    model = losses.one_layer_model(x, encode, decode, prior)
    return _model_log_likelihood_and_ess(key, model, k_samples, chunk_size, with_means=False)[0]


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


def _model_log_likelihood_and_ess(key, model, k_samples, chunk_size, *, with_means=True):
    """`model_log_likelihood` plus the effective sample size of the same k weights.

    with_means=False skips the running mean of the samples (None is returned for it): a
    one-layer model's posterior mean is exact, so its NLL loop carries only the log sums.
    """
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

        if with_means:
            sums = jax.tree.map(add, sums, z)
        return (_add_log_sums(totals, log_w), sums), None

    sums = None
    if with_means:
        z_shape, _ = jax.eval_shape(draw, key)
        sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), z_shape)
    init = ((jnp.full((), -jnp.inf, jnp.float32),) * 2, sums)
    (totals, sums), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    means = None if sums is None else jax.tree.map(lambda s: s / k_samples, sums)
    return totals[0] - jnp.log(float(k_samples)), means, _ess(totals)


def _example_metrics(
    key: Array,
    model: losses.LatentModel,
    *,
    k_list: tuple[int, ...],
    nll_k: int,
    chunk_size: int,
) -> dict[str, Array]:
    """All per-example quantities of one example's model (the one evaluation path).

    Always: 'elbo', 'recon', 'kl' (analytic KL where the one-layer capability has one),
    'iwae_k{k}', 'ess_k{K}', 'log_px' (with nll_k). With the one-layer capability
    (`model.one_layer`): 'posterior_mean' [D] (q's exact mean), 'recon_error' and, against
    the N(0, I) prior, 'kl_per_dim' [D]; a point-mass q (the autoencoder's 'delta') has no ELBO,
    KL or importance-sampled bound, so its 'recon' is -log p(x|z) at the code and the bound
    entries are absent. Otherwise: 'posterior_mean/<latent>' (the mean of the NLL's importance
    samples, or of MEAN_SAMPLES draws when there is no NLL), so active units are counted per
    stochastic layer.
    """
    one = model.one_layer
    if one is not None and not _is_gaussian(one.q):
        return {
            'posterior_mean': one.q.mean(),
            'recon_error': _recon_error(one, model.x),
            'recon': losses.model_autoencoder(key, model)['recon'],
        }
    # The key layout of earlier releases, kept so that published evaluations reproduce bit for
    # bit: one-layer models with the N(0, I) prior never needed a key for the posterior mean.
    legacy = one is not None and one.standard_prior
    elbo_key, nll_key, *rest = jax.random.split(key, (2 if legacy else 3) + len(k_list))
    mean_key, iwae_keys = (None, rest) if legacy else (rest[0], rest[1:])
    terms = losses.model_elbo(elbo_key, model, analytic_kl=True)
    out = {name: terms[name] for name in ('elbo', 'recon', 'kl')}
    with_means = one is None
    for k, iwae_key in zip(k_list, iwae_keys, strict=True):
        out[f'iwae_k{k}'], _, ess = _model_log_likelihood_and_ess(
            iwae_key, model, k, chunk_size, with_means=False
        )
        if k == max(k_list):
            out[f'ess_k{k}'] = ess
    means = None
    if nll_k:
        out['log_px'], means, _ = _model_log_likelihood_and_ess(
            nll_key, model, nll_k, chunk_size, with_means=with_means
        )
    if one is not None:
        out['posterior_mean'] = one.q.mean()
        out['recon_error'] = _recon_error(one, model.x)
        if one.standard_prior:
            # Marginal KLs: they sum to the KL for a diagonal q; for a full-covariance q the sum
            # is <= the KL (the gap is q's total correlation).
            out['kl_per_dim'] = losses.kl_per_dimension(one.q)
        return out
    if means is None:
        means = jax.tree.map(
            lambda leaf: jnp.mean(leaf, axis=0), model.sample(mean_key, MEAN_SAMPLES)
        )
    for name, mean in _named_leaves(means):
        out[f'posterior_mean/{name}'] = mean.reshape(-1)
    return out


def _recon_error(one: losses.OneLayer, x: Array) -> Array:
    """Mean over data values of (E[x | z = mean of q] - x)^2: one decode at q's mean."""
    return jnp.mean(jnp.square(one.decode(one.q.mean()[None]).mean()[0] - x))


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


def _is_gaussian(q: distrax.Distribution) -> bool:
    return isinstance(q, distrax.MultivariateNormalFromBijector)


@functools.cache
def one_layer_model_fn(bind: Callable[..., Any], takes_variables: bool) -> Callable[..., Any]:
    """The one-layer closures of research code as a model function `(variables, x, y) ->
    losses.LatentModel` (what `steps.make_model_fn` gives for a run's model).

    Args:
      bind: y -> (encode, decode) (the losses contract; eval mode, parameters bound), or, with
        `takes_variables`, (variables, y) -> (encode, decode).
      takes_variables: whether `bind` takes the variables.

    Returns:
      model_fn; the same object for the same arguments, so jitted evaluation compiles once.
    """

    def model_fn(variables: Any, x: Array, y: Array | None) -> losses.LatentModel:
        encode, decode = bind(variables, y) if takes_variables else bind(y)
        return losses.one_layer_model(x, encode, decode)

    return model_fn


def _evaluate_batch(
    variables: Any,
    key: Array,
    indices: Array,
    images: Array,
    labels: Array | None,
    *,
    model_fn: Callable[..., Any],
    k_list: tuple[int, ...],
    nll_k: int,
    chunk_size: int,
    dynamic_binarize: bool,
    has_labels: bool,
    input_spec: input_transform.InputSpec | None = None,
) -> dict[str, Array]:
    """`_example_metrics` vmapped over a batch; example n uses fold_in(key, n)."""
    if input_spec is not None:
        images = input_transform.to_model_input(images, input_spec)

    def per_example(index, x, y):
        bin_key, metrics_key = jax.random.split(jax.random.fold_in(key, index))
        if dynamic_binarize:
            x = jax.random.bernoulli(bin_key, x).astype(x.dtype)
        y = y if has_labels else None
        return _example_metrics(
            metrics_key,
            model_fn(variables, x, y),
            k_list=k_list,
            nll_k=nll_k,
            chunk_size=chunk_size,
        )

    if labels is None:
        labels = jnp.zeros(indices.shape, jnp.int32)
    return jax.vmap(per_example)(indices, images, labels)


def evaluate_dataset(
    key: Array,
    images: np.ndarray,
    labels: np.ndarray | None,
    bind: Callable[..., Any] | None = None,
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
    input_spec: input_transform.InputSpec | None = None,
) -> dict[str, Any]:
    """Evaluates a model on a data set: ELBO, IWAE bounds, NLL, active units.

    Every example is processed exactly once (the last batch is padded, then sliced), with its
    own key fold_in(key, n) for example n, so the numbers do not depend on `batch_size` or
    `chunk_size`. The batch function is jitted once per (model, options); pass `variables` (and
    a model function or `bind` that takes them) so a trainer evaluating new parameters does not
    recompile. Give the model as `model_fn` (any model; how runs are evaluated) or, for research
    code, as one-layer closures `bind` (adapted by `one_layer_model_fn`).

    Args:
      key: evaluation key (a fixed eval key makes runs comparable).
      images: [N, *event] float data in the likelihood's support ([0, 1] grey values when
        `dynamic_binarize`); with `input_spec`, [N, ...] rows as stored (uint8, bool, float32).
        An array, a memmap or a lazy view of stored rows (`row_sources.StoredRows`) is read one
        batch at a time (each row once), so a split need not fit in memory; anything else (a
        list) is converted with np.asarray first.
      labels: [N] int32, or None for unconditional models (bind then gets y=None).
      bind: y -> (encode, decode) (the losses contract; eval mode, parameters bound), or, when
        `variables` is given, (variables, y) -> (encode, decode); None with `model_fn`.
      variables: optional pytree passed to the model as a jit argument.
      k_list: the k of the reported IWAE bounds 'iwae_k{k}'.
      nll_k: importance samples for 'nll' (Burda et al.: 5000); 0 skips it.
      chunk_size: importance samples per scan step (memory ~ batch_size * chunk_size).
      batch_size: examples per jitted call.
      dynamic_binarize: replace each image by a Bernoulli(image) draw from example n's key.
      progress: optional callback(num_done, num_total) after each batch.
      model_fn: (variables, x, y) -> `losses.LatentModel` (e.g. `steps.make_model_fn`): any
        model (several stochastic layers, learned priors, flows); without the one-layer
        capability active units are counted per layer ('active_units/<latent>').
      return_per_example: also return 'per_example': dict of numpy arrays over the N examples
        ('elbo', 'recon', 'kl', 'iwae_k{k}', 'log_px' [N]; 'kl_per_dim', 'posterior_mean'
        [N, D]; those that apply), e.g. for a latent scatter plot or per-example NLLs.
      input_spec: how stored rows become model input (`input_transform.spec_from`), converted
        inside the jitted batch call; None: `images` are float model input.

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
      ValueError: on an empty data set, mismatched label count or non-positive sizes, or
        integer/bool images without `input_spec`.
    """
    if (bind is None) == (model_fn is None):
        raise ValueError('evaluate_dataset needs exactly one of bind and model_fn')
    if model_fn is None:
        model_fn = one_layer_model_fn(bind, variables is not None)
    if not _is_array_like(images):
        images = np.asarray(images)  # A list, say; arrays and views are read batch by batch.
    n = images.shape[0]
    if n == 0:
        raise ValueError('evaluate_dataset got an empty data set')
    if input_spec is None and images.dtype.kind != 'f':
        raise ValueError(
            f'evaluate_dataset: images are {images.dtype} without input_spec; pass the spec of the '
            'stored data (input_transform.spec_from) so they are scaled as in training, or float '
            'images.'
        )
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f'labels must be [N]={n}, got shape {np.shape(labels)}')
    if batch_size < 1 or chunk_size < 1 or nll_k < 0 or any(k < 1 for k in k_list):
        raise ValueError(
            f'need batch_size, chunk_size, k_list >= 1 and nll_k >= 0; got {batch_size}, '
            f'{chunk_size}, {tuple(k_list)}, {nll_k}'
        )
    batch_fn = functools.partial(
        _jitted_evaluate_batch(_options_key(backends.compiler_options())),
        model_fn=model_fn,
        k_list=tuple(int(k) for k in k_list),
        nll_k=int(nll_k),
        chunk_size=int(chunk_size),
        dynamic_binarize=bool(dynamic_binarize),
        has_labels=labels is not None,
        input_spec=input_spec,
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
            jnp.asarray(
                _batch_rows(images, start, batch_size), jnp.float32 if input_spec is None else None
            ),
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


def _is_array_like(images: Any) -> bool:
    """An np.ndarray (a memmap too), or a view with shape, dtype and slicing (`StoredRows`)."""
    return isinstance(images, np.ndarray) or all(
        hasattr(images, name) for name in ('shape', 'dtype', '__getitem__', '__array__')
    )


def _batch_rows(images: Any, start: int, batch_size: int) -> np.ndarray:
    """Rows start .. start + batch_size - 1, the last one repeated past the end: `images[idx]`.

    Only these rows are read (a slice of a memmap or a `row_sources.StoredRows` view, then
    `np.asarray`), and each row once; the values equal `images[np.minimum(idx, n - 1)]`.
    """
    rows = np.asarray(images[start : start + batch_size])
    if len(rows) < batch_size:
        rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - len(rows), axis=0)])
    return rows


def _options_key(options: dict[str, str] | None) -> tuple[tuple[str, str], ...] | None:
    return None if options is None else tuple(sorted(options.items()))


@functools.cache
def _jitted_evaluate_batch(options: tuple[tuple[str, str], ...] | None) -> Callable[..., Any]:
    """`_evaluate_batch`, jitted with these compiler options (`backends.compiler_options()`).

    One jitted function per set of options, read at each call: the backend's options are never
    frozen by the first evaluation of a process (a run under another backend's defaults would
    otherwise leave its options to every later evaluation in the process).
    """
    return jax.jit(
        _evaluate_batch,
        static_argnames=(
            'model_fn',
            'k_list',
            'nll_k',
            'chunk_size',
            'dynamic_binarize',
            'has_labels',
            'input_spec',
        ),
        compiler_options=None if options is None else dict(options),
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
