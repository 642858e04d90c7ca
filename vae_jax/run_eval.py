"""A run's evaluation: one function computes it, one builder makes its eval.json record.

Both the trainer (at the end of a run) and `python -m vae_jax.evaluate` call `evaluate_run`
(`evaluation.evaluate_dataset` through the run's model function, plus the training objective's
own terms on the same examples) and `record` (the protocol of the evaluation and its metrics,
with bits/dim where defined), so the two write the same keys and, for the same key and settings,
the same values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import data, disentangle_eval, evaluation, input_transform, run_files, steps
from vae_jax.build import ModelParts, root_keys


def evaluate_run(
    parts: ModelParts,
    variables: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    key: jax.Array | None = None,
    nll_k: int = 0,
    chunk_size: int = evaluation.CHUNK_SIZE,
    batch_size: int = evaluation.BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
    step: int | None = None,
    input_spec: input_transform.InputSpec | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A run's metrics on `images`: `evaluation.evaluate_dataset` and `objective_terms`.

    Args:
      parts: the run's model (`build.build`).
      variables: {'params', optional 'batch_stats'}.
      images: [N, ...] as stored (uint8, bool or float32; see `input_spec`); labels: [N] int.
      key: the evaluation key; default the run's eval key. The objective's terms always use the
        run's eval key.
      nll_k: importance samples of the NLL; 0 skips it.
      chunk_size, batch_size: memory and speed, not values.
      progress: optional callback(num_done, num_total).
      step: the step of `variables`, for objectives with a schedule of their own (AnnealedVAE's
        capacity); None: `config.num_train_steps` (a finished run's).
      input_spec: how stored rows become model input (`input_transform.spec_from`); the jitted
        evaluation converts each batch. None: `images` are float model input already.

    Returns:
      (metrics: `evaluate_dataset`'s summary plus 'objective/<term>', per-example arrays).
    """
    eval_key = root_keys(parts.config.seed)[3]
    metrics = evaluation.evaluate_dataset(
        eval_key if key is None else key,
        images,
        labels,
        variables=variables,
        model_fn=parts.model_fn,
        k_list=tuple(parts.config.eval_k_samples),
        nll_k=nll_k,
        chunk_size=chunk_size,
        batch_size=batch_size,
        dynamic_binarize=parts.static.dynamic_binarize,
        progress=progress,
        return_per_example=True,
        input_spec=input_spec,
    )
    per_example = metrics.pop('per_example')
    step = parts.config.num_train_steps if step is None else step
    metrics.update(
        objective_terms(
            parts, variables, eval_key, images, labels, step=step, input_spec=input_spec
        )
    )
    return metrics, per_example


def record(
    config: ml_collections.ConfigDict,
    step: int,
    metrics: dict[str, Any],
    *,
    split: str,
    nll_k: int,
    chunk_size: int,
    batch_size: int,
    seed: int | None,
    evaluated_by: str,
    eval_time_sec: float,
) -> dict[str, Any]:
    """The eval.json record of an evaluation: its protocol, then its metrics and bits/dim.

    Args:
      config: the run's config.
      step: the evaluated checkpoint's step.
      metrics: `evaluate_run`'s metrics.
      split: 'test' or 'train'.
      nll_k, chunk_size, batch_size: the evaluation's settings.
      seed: the seed of the evaluation key, or None for the run's eval key (from config.seed).
      evaluated_by: 'vae_jax.train' or 'vae_jax.evaluate'.
      eval_time_sec: how long the evaluation took.
    """
    return {
        'step': int(step),
        'split': split,
        'num_examples': metrics['num_examples'],
        'binarize': config.input.binarize,
        'seed': config.seed if seed is None else seed,
        'seed_from': 'config' if seed is None else 'flag',
        'eval_k_samples': [int(k) for k in config.eval_k_samples],
        'nll_k': int(nll_k),
        'chunk_size': int(chunk_size),
        'batch_size': int(batch_size),
        'evaluated_by': evaluated_by,
        'eval_time_sec': round(float(eval_time_sec), 2),
        **metrics,
        **evaluation.bits_per_dim(
            metrics['nll'], likelihood=config.model.likelihood, **data.value_grid(config.input)
        ),
    }


# fold_in salt of the held-out objective terms (`objective_terms`): their own noise.
OBJECTIVE_SALT = 0x4F424A


def objective_terms(
    parts: ModelParts,
    variables: dict[str, Any],
    eval_key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    step: int = 0,
    input_spec: input_transform.InputSpec | None = None,
) -> dict[str, float]:
    """The training objective's terms on held-out data, in evaluation mode.

    Whatever the objective reports (the ESS of the IWAE family, beta-TCVAE's MI, TC and
    dimension-wise KL, ...), averaged over the examples, in batches of the training batch size
    (beta-TCVAE's estimator depends on it); a last partial batch is left out. The key is
    fold_in(eval_key, OBJECTIVE_SALT), then fold_in(., batch index).

    Args:
      parts: the model (`build.build`).
      variables: {'params', optional 'batch_stats'}.
      eval_key: the run's evaluation key.
      images: [N, ...] as stored (an array, or a `row_sources.StoredRows` view: each batch's
        rows are read when it is evaluated); labels: [N].
      step: the optimizer step the objective sees (AnnealedVAE's capacity C(step)).
      input_spec: how stored rows become model input, converted in the jitted call; None:
        `images` are float model input already.

    Returns:
      {'objective/<term>': mean}; empty when the data is smaller than one batch.
    """
    batch = int(parts.config.input.batch_size)
    num_batches = images.shape[0] // batch
    if num_batches == 0:
        return {}
    fn = _objective_terms_fn(parts, input_spec)
    key = jax.random.fold_in(eval_key, OBJECTIVE_SALT)
    sums: dict[str, float] = {}
    for i in range(num_batches):
        rows = slice(i * batch, (i + 1) * batch)
        terms = jax.device_get(
            fn(
                variables['params'],
                variables.get('batch_stats', {}),
                jax.random.fold_in(key, i),
                _batch_rows(images[rows], input_spec),
                jnp.asarray(labels[rows], jnp.int32),
                jnp.asarray(parts.config.beta, jnp.float32),
                jnp.asarray(step, jnp.int32),
            )
        )
        for name, values in terms.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(values, dtype=np.float64))
    count = num_batches * batch
    return {f'objective/{name}': total / count for name, total in sums.items()}


def _batch_rows(images: np.ndarray, input_spec: input_transform.InputSpec | None) -> jax.Array:
    """A batch as the jitted call takes it: as stored with a spec, else float32 model input.

    `images` may be a slice of a lazy view (`row_sources.StoredRows`): np.asarray reads it.
    """
    images = np.asarray(images)
    return jnp.asarray(images) if input_spec is not None else jnp.asarray(images, jnp.float32)


def _objective_terms_fn(
    parts: ModelParts, input_spec: input_transform.InputSpec | None = None
) -> Callable[..., Any]:
    def model_input(images):
        if input_spec is None:
            return images
        return input_transform.to_model_input(images, input_spec)

    return jax.jit(
        lambda params, stats, key, images, labels, beta, step: steps.batch_terms(
            params,
            stats,
            key,
            model_input(images),
            labels,
            beta,
            apply_fn=parts.model.apply,
            static=parts.static,
            train=False,
            step=step,
        )[0]
    )


def finished_result(
    workdir: Path, config: ml_collections.ConfigDict, step: int
) -> dict[str, Any] | None:
    """The eval.json of a run that is finished at `step` (and says so), else None."""
    eval_path = workdir / run_files.EVAL_FILE
    if step >= config.num_train_steps and eval_path.exists():
        result = json.loads(eval_path.read_text())
        if result.get('step') == step:
            print(
                f'{workdir}: run already finished at step {step}; '
                f'test ELBO {format_metric(result.get("elbo"))} (see {eval_path})'
            )
            return result
    return None


def format_metric(value: float | None) -> str:
    """A metric for the summary line; None (no ELBO for the autoencoder objective) -> 'n/a'."""
    return 'n/a' if value is None else f'{value:.4f}'


# fold_in salt of the disentanglement metrics' key (`disentanglement`).
DISENTANGLEMENT_SALT = 0x444953
# The sizes of the end-of-run disentanglement metrics, far below disentanglement_lib's (its
# beta-VAE score alone encodes 1.9 million images; DCI's gradient-boosted trees take minutes),
# so that a dsprites32 run's end costs well under a minute on 2 CPU cores: about 30,000 images
# rendered and encoded (the beta-VAE score 14,400, the FactorVAE score 9,200, MIG 5,000, DCI and
# SAP 3,000 each; 24-42 s in all, wall clock, for configs/dsprites_beta_vae.py's network on a
# 2-core machine shared with other jobs, compiles included) and DCI with the Lasso (Eastwood &
# Williams' own regressor, linear relations only) instead of gradient-boosted trees. Their
# sampling error is larger than at the published sizes: `disentanglement(model, settings={})`
# gives those.
DISENTANGLEMENT_SETTINGS = {
    'beta_vae_num_train': 300,
    'beta_vae_num_eval': 150,
    'beta_vae_batch_size': 16,
    'factor_vae_num_train': 300,
    'factor_vae_num_eval': 150,
    'factor_vae_batch_size': 16,
    'factor_vae_num_variance_estimate': 2_000,
    'mig_num_train': 5_000,
    'dci_num_train': 2_000,
    'dci_num_test': 1_000,
    'dci_regressor': 'lasso',
    'sap_num_train': 2_000,
    'sap_num_test': 1_000,
}


def disentanglement(
    model: Any, *, key: jax.Array | None = None, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The disentanglement metrics of a trained run on a data set with factors, for eval.json.

    `disentangle_eval.disentanglement_metrics` with the settings recorded under
    'disentanglement/settings' (with the time taken, 'time_sec').

    Args:
      model: the run's `trained.TrainedModel` (data set in `data.FACTOR_DATASETS`).
      key: the metrics' key; default fold_in(the run's eval key, DISENTANGLEMENT_SALT), so the
        trainer and `vae_jax.evaluate` give the same numbers for the same parameters.
      settings: {'<metric>_<keyword>': value} (`disentangle_eval.metric_settings`); None:
        `DISENTANGLEMENT_SETTINGS` (what the trainer and `vae_jax.evaluate` use); {}:
        disentanglement_lib's sizes (minutes, not seconds).

    Returns:
      {'disentanglement/<metric>': float, ..., 'disentanglement/settings': {...}}.

    Raises:
      ValueError: a data set without factors, a conditional run, an unknown setting.
    """
    if key is None:
        key = jax.random.fold_in(root_keys(model.config.seed)[3], DISENTANGLEMENT_SALT)
    start = time.time()
    settings = DISENTANGLEMENT_SETTINGS if settings is None else settings
    out = disentangle_eval.disentanglement_metrics(model, key, **settings)
    out['disentanglement/settings']['time_sec'] = round(time.time() - start, 2)
    return out
