"""A run's evaluation: one function computes it, one builder makes its eval.json record.

Both the trainer (at the end of a run) and `python -m vae_jax.evaluate` call `evaluate_run`
(`evaluation.evaluate_dataset` through the run's model function, plus the training objective's
own terms on the same examples) and `record` (the protocol of the evaluation and its metrics,
with bits/dim where defined), so the two write the same keys and, for the same key and settings,
the same values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import data, evaluation, run_files, steps
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
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A run's metrics on `images`: `evaluation.evaluate_dataset` and `objective_terms`.

    Args:
      parts: the run's model (`build.build`).
      variables: {'params', optional 'batch_stats'}.
      images: [N, *event]; labels: [N] int.
      key: the evaluation key; default the run's eval key. The objective's terms always use the
        run's eval key.
      nll_k: importance samples of the NLL; 0 skips it.
      chunk_size, batch_size: memory and speed, not values.
      progress: optional callback(num_done, num_total).

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
    )
    per_example = metrics.pop('per_example')
    metrics.update(objective_terms(parts, variables, eval_key, images, labels))
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
      images: [N, *data_shape]; labels: [N].

    Returns:
      {'objective/<term>': mean}; empty when the data is smaller than one batch.
    """
    batch = int(parts.config.input.batch_size)
    num_batches = images.shape[0] // batch
    if num_batches == 0:
        return {}
    fn = _objective_terms_fn(parts)
    key = jax.random.fold_in(eval_key, OBJECTIVE_SALT)
    sums: dict[str, float] = {}
    for i in range(num_batches):
        rows = slice(i * batch, (i + 1) * batch)
        terms = jax.device_get(
            fn(
                variables['params'],
                variables.get('batch_stats', {}),
                jax.random.fold_in(key, i),
                jnp.asarray(images[rows], jnp.float32),
                jnp.asarray(labels[rows], jnp.int32),
                jnp.asarray(parts.config.beta, jnp.float32),
            )
        )
        for name, values in terms.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(values, dtype=np.float64))
    count = num_batches * batch
    return {f'objective/{name}': total / count for name, total in sums.items()}


def _objective_terms_fn(parts: ModelParts) -> Callable[..., Any]:
    return jax.jit(
        lambda params, stats, key, images, labels, beta: steps.batch_terms(
            params,
            stats,
            key,
            images,
            labels,
            beta,
            apply_fn=parts.model.apply,
            static=parts.static,
            train=False,
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
