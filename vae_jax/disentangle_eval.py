"""Disentanglement metrics of a trained run on dSprites: `disentanglement_metrics(model, key)`.

    model = vae_jax.load('runs/dsprites_beta4')
    out = disentanglement_metrics(model, jax.random.key(0), mig_num_train=5000)
    out['disentanglement/mig'], out['disentanglement/settings']

The representation is the posterior mean: each latent of `sample_posterior` at zero noise,
flattened and concatenated ([D] per image). For a one-layer Gaussian q that is q's mean; for a
hierarchy, each layer's mean given the layers it is conditioned on at theirs; for an IAF
posterior, the flow's image of its base mean (what `TrainedModel.reconstruct` decodes). The
observations are the run's data set (`dsprites` or `dsprites32`) from the same source its
training data came from (TFDS when prepared in the data dir, else the renderer).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data, disentanglement, dsprites

METRICS = {
    'beta_vae': disentanglement.beta_vae_score,
    'factor_vae': disentanglement.factor_vae_score,
    'mig': disentanglement.mig,
    'dci': disentanglement.dci,
    'sap': disentanglement.sap,
}


def posterior_mean_fn(model) -> Callable[[Any], np.ndarray]:
    """The posterior-mean representation of a loaded run (module docstring).

    Args:
      model: a `vae_jax.load(workdir)` result (`TrainedModel`).

    Returns:
      images [B, *data_shape] -> float32 [B, D] (D: all latents' sizes summed), jitted.

    Raises:
      ValueError: a conditional run (its posterior needs labels the factors do not give).
    """
    if model.config.model.use_labels:
        raise ValueError(
            'disentanglement metrics: this run is conditional (model.use_labels=True); the '
            'posterior mean of an unconditional model is the representation scored.'
        )
    module, variables = model.parts.model, model.variables
    latent_shapes = module.latent_shapes

    @jax.jit
    def encode(x):
        def one(x):
            noise = {n: jnp.zeros((1, *s), jnp.float32) for n, s in latent_shapes.items()}
            z = module.apply(variables, x, noise, y=None, train=False, method='sample_posterior')
            return jnp.concatenate([z[n][0].reshape(-1) for n in sorted(latent_shapes)])

        return jax.vmap(one)(x)

    return lambda x: np.asarray(encode(jnp.asarray(x, jnp.float32)))


def observe_fn(input_config) -> Callable[[Any], np.ndarray]:
    """factors int [N, 5] -> images float32 [N, S, S, 1] of the run's dSprites data set.

    Raises:
      ValueError: the run's data set has no factors.
    """
    name = input_config.dataset
    if name not in data.FACTOR_DATASETS:
        raise ValueError(
            f'disentanglement metrics need a data set with ground-truth factors; this run has '
            f'input.dataset={name!r}; allowed: {", ".join(data.FACTOR_DATASETS)}.'
        )
    size = dsprites.DATASET_SIZES[name]
    data_dir = data.resolve_data_dir(input_config.data_dir)
    if dsprites.source(data_dir) == 'renderer':
        return functools.partial(dsprites.images_from_factors, size=size)
    stored = dsprites.read_tfds(data_dir, size=size)
    return lambda factors: stored[dsprites.factors_to_index(factors)].astype(np.float32)


def metric_settings(**settings) -> dict[str, dict[str, Any]]:
    """Every metric's settings: its defaults, overridden by `<metric>_<setting>=value`.

    Raises:
      ValueError: a keyword that names no metric's setting.
    """
    out = {}
    for name, fn in METRICS.items():
        out[name] = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY
        }
    for key, value in settings.items():
        name = next((n for n in METRICS if key.startswith(n + '_')), None)
        setting = key[len(name) + 1 :] if name else None
        if name is None or setting not in out[name]:
            allowed = ', '.join(f'{n}_{s}' for n, opts in out.items() for s in opts)
            raise ValueError(
                f'disentanglement setting {key}={value!r} is unknown; allowed: {allowed}.'
            )
        out[name][setting] = value
    return out


def disentanglement_metrics(
    model, key: jax.Array, *, metrics: tuple[str, ...] = tuple(METRICS), **settings
) -> dict[str, Any]:
    """The disentanglement metrics of a loaded dSprites run, keyed for eval.json.

    Args:
      model: a `vae_jax.load(workdir)` result, trained on `dsprites` or `dsprites32`.
      key: a JAX key; metric i uses `fold_in(key, i)` (i: its position in `METRICS`), so
        choosing a subset does not change a metric's number.
      metrics: which of `METRICS` to compute.
      **settings: `<metric>_<keyword>=value`, e.g. `mig_num_train=5000`, `dci_regressor='lasso'`
        (keywords of the functions in vae_jax/disentanglement.py; disentanglement_lib's
        defaults otherwise).

    Returns:
      {'disentanglement/beta_vae', 'disentanglement/factor_vae', 'disentanglement/mig',
       'disentanglement/dci_disentanglement', 'disentanglement/dci_completeness',
       'disentanglement/dci_informativeness', 'disentanglement/sap': floats (those asked for),
       'disentanglement/settings': {metric: {setting: value}, 'representation':
       'posterior_mean', 'data_source': 'tfds' | 'renderer', 'dataset': name}}.

    Raises:
      ValueError: a data set without factors, a conditional run, an unknown metric or setting.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f'metrics={unknown!r} unknown; allowed: {", ".join(METRICS)}.')
    options = metric_settings(**settings)
    observe = observe_fn(model.config.input)
    represent = posterior_mean_fn(model)
    out: dict[str, Any] = {}
    for i, name in enumerate(METRICS):
        if name not in metrics:
            continue
        value = METRICS[name](
            represent, dsprites.sample_factors, observe, jax.random.fold_in(key, i), **options[name]
        )
        if name == 'dci':
            for part in ('disentanglement', 'completeness', 'informativeness'):
                out[f'disentanglement/dci_{part}'] = float(value[part])
        else:
            out[f'disentanglement/{name}'] = float(value)
    data_dir = data.resolve_data_dir(model.config.input.data_dir)
    out['disentanglement/settings'] = {
        **{name: options[name] for name in metrics},
        'representation': 'posterior_mean',
        'data_source': dsprites.source(data_dir),
        'dataset': model.config.input.dataset,
    }
    return out
