"""A trained run as a model for research code: `vae_jax.load(workdir)`.

    import jax, vae_jax
    model = vae_jax.load('experiments/iwae_mnist/workdirs/iwae_k5')
    q = model.encode(x)                      # x [B, 28, 28, 1] -> q(z|x), batch [B], event [D]
    x_mean = model.reconstruct(x)            # [B, 28, 28, 1]
    samples = model.sample(jax.random.key(0), 16)              # [16, 28, 28, 1]
    log_px = model.log_likelihood(jax.random.key(1), x, 5000)  # [B]

`load` rebuilds the model from the run's config.json (the data shape comes from the config, so no
data set is read) and restores the newest checkpoint, verified against the checksum recorded when
it was saved. Full training checkpoints and parameters-only checkpoints (written by
`checkpoints.export_params` for published runs) both load.

This module also holds what the trainer and `load` share: the model built from a config
(`build`), the run's keys (`root_keys`) and the initial train state (`create_train_state`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import default as default_config
from vae_jax import (
    checkpoints,
    config_validation,
    data,
    evaluation,
    models,
    optim,
    run_files,
    steps,
)


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys from its seed: (init_key, loop_key, data_key, eval_key), typed [] keys."""
    init_key, loop_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    return init_key, loop_key, data_key, eval_key


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """A config's model, without data: the Flax module and its evaluation-mode closures.

    Attributes:
      config: the experiment config.
      data_shape: one example's shape, e.g. (28, 28, 1) or (2,).
      static: the jitted step's settings (`steps.StepConfig`).
      model: the Flax module.
      bind_fn: (variables, y [] int or None) -> (encode, decode), evaluation mode; None for a
        model that is not the built-in layer-spec VAE (pictures need these closures).
      model_fn: the model as log-weights for evaluation (`steps.make_model_fn`); None for the
        built-in VAE with the N(0, I) prior, which keeps its analytic-KL evaluation path.
    """

    config: ml_collections.ConfigDict
    data_shape: tuple[int, ...]
    static: steps.StepConfig
    model: nn.Module
    bind_fn: Callable[..., Any] | None
    model_fn: Callable[..., Any] | None = None


def build(
    config: ml_collections.ConfigDict,
    data_shape: tuple[int, ...] | None = None,
    model: nn.Module | None = None,
    dataset_size: int = 0,
) -> ModelParts:
    """The model of `config` (or `model`, a module with the built-in VAE's interface).

    Args:
      config: the experiment config (validated here).
      data_shape: one example's shape; default: computed from `config.input` without any data.
      model: a Flax module to use instead of the one `config.model` describes.
      dataset_size: training examples (beta-TCVAE's minibatch weights); 0 where no step runs.

    Raises:
      ValueError: a bad config value (naming the key, the value and what is allowed).
    """
    config_validation.validate(config)
    if data_shape is None:
        data_shape = data.data_shape(config.input)
    data_shape = tuple(data_shape)
    if model is None:
        model = models.create_model(config.model, data_shape, config.objective)
    else:
        model = models.check_model(model, data_shape, bool(config.model.use_labels), where='model=')
    static = steps.StepConfig.from_config(config, data_shape, model, dataset_size=dataset_size)
    builtin = static.latent_shapes is None
    bind_fn = steps.make_bind_fn(model.apply, static) if builtin else None
    model_fn = None
    if not builtin or static.prior != 'standard_normal':
        model_fn = steps.make_model_fn(model.apply, static)
    return ModelParts(config, data_shape, static, model, bind_fn, model_fn)


def create_train_state(
    parts: ModelParts, key: jax.Array, tx: optax.GradientTransformation
) -> steps.TrainState:
    """Parameters (and BatchNorm statistics) initialised from `key`, with an int32 step 0."""
    variables = models.init_variables(
        parts.model, key, parts.data_shape, bool(parts.config.model.use_labels)
    )
    state = steps.TrainState.create(
        apply_fn=parts.model.apply,
        params=variables['params'],
        tx=tx,
        batch_stats=variables.get('batch_stats', {}),
    )
    # An int32 array step keeps the scan carry's type fixed across calls.
    return state.replace(step=jnp.zeros((), jnp.int32))


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The run's config from `<workdir>/config.json` (written by the trainer).

    Raises:
      FileNotFoundError: no config.json (not a run directory).
    """
    path = Path(workdir) / run_files.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f'{path} not found: the workdir must be a run directory written by vae_jax.train'
        )
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    config.eval_k_samples = tuple(config.eval_k_samples)
    # A run written before a top-level key existed (e.g. the zoo's options) takes its default.
    _fill_missing(config, default_config.get_config())
    return config


def _fill_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    """Adds (recursively) the keys of `defaults` that `config` lacks, with their defaults."""
    for key in defaults.keys():
        if key not in config:
            value = defaults[key]
            config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
        elif isinstance(defaults[key], ml_collections.ConfigDict) and isinstance(
            config[key], ml_collections.ConfigDict
        ):
            _fill_missing(config[key], defaults[key])


def restore_variables(workdir: str | Path, parts: ModelParts) -> tuple[dict[str, Any], int]:
    """The newest verified checkpoint's variables {'params', optional 'batch_stats'} and step.

    Raises:
      FileNotFoundError: the run has no checkpoint.
      RuntimeError: the newest checkpoint is damaged.
    """
    config = parts.config
    # The optimizer's state has the same structure for any steps_per_epoch: no data needed.
    tx = optim.create_optimizer(
        config.optim, steps_per_epoch=1, num_train_steps=config.num_train_steps
    )
    target = jax.device_get(create_train_state(parts, root_keys(config.seed)[0], tx))
    restored, step = checkpoints.load(Path(workdir), target, allow_params_only=True)
    if step is None:
        raise FileNotFoundError(
            f'no checkpoint in {Path(workdir) / run_files.CHECKPOINT_DIR}: train the run first '
            '(python -m vae_jax.train)'
        )
    return checkpoints.variables_of(restored), step


class TrainedModel:
    """A trained run's model with its parameters bound; every method is jitted once per shape.

    Attributes:
      config: the run's config.
      step: the step of the restored checkpoint.
      variables: {'params', optional 'batch_stats'}.
      eval_key: the run's evaluation key (what the trainer and `vae_jax.evaluate` use).
      parts: the model (`ModelParts`).
    """

    def __init__(self, parts: ModelParts, variables: dict[str, Any], step: int):
        self.parts = parts
        self.config = parts.config
        self.variables = variables
        self.step = step
        self.eval_key = root_keys(self.config.seed)[3]
        self._reconstruct = jax.jit(steps.reconstruct, static_argnums=0)
        self._decode_mean = jax.jit(steps.decode_mean, static_argnums=0)

    @property
    def latent_dim(self) -> int:
        return int(self.config.model.latent_dim)

    def _labels(self, labels: Any, n: int, method: str) -> jax.Array:
        if not self.parts.static.use_labels:
            return jnp.zeros((n,), jnp.int32)
        if labels is None:
            raise ValueError(
                f'{method}: this run is conditional (model.use_labels=True): pass labels, [B] '
                f'ints in 0 .. {self.config.model.num_classes - 1}'
            )
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))
        return labels

    def _batch(self, x: Any, method: str) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:] != self.parts.data_shape:
            raise ValueError(
                f'{method}: x must be [B, {", ".join(map(str, self.parts.data_shape))}] (this '
                f"run's data shape with a leading batch axis), got {x.shape}"
            )
        return x

    def _bind_fn(self, method: str) -> Callable[..., Any]:
        """The encode/decode closures; they exist for the built-in layer-spec VAE only."""
        if self.parts.bind_fn is None:
            raise ValueError(
                f'{method}: this run trained a model of its own ({type(self.parts.model).__name__}'
                '), which offers the log-weights protocol, not encode/decode closures; use '
                "log_likelihood, or call the module's protocol methods with `self.variables`."
            )
        return self.parts.bind_fn

    def encode(self, x: Any, labels: Any = None) -> distrax.Distribution:
        """q(z|x): x [B, *data_shape] (labels [B] for a conditional run) -> batch [B], event [D]."""
        x = self._batch(x, 'encode')
        y = self._labels(labels, x.shape[0], 'encode') if self.parts.static.use_labels else None
        encode, _ = self._bind_fn('encode')(self.variables, y)
        return encode(x)

    def decode(self, z: Any, labels: Any = None) -> distrax.Distribution:
        """p(x|z): z [B, D] -> a distribution with batch [B] and event [*data_shape]."""
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f'decode: z must be [B, {self.latent_dim}], got {z.shape}')
        y = self._labels(labels, z.shape[0], 'decode') if self.parts.static.use_labels else None
        _, decode = self._bind_fn('decode')(self.variables, y)
        return decode(z)

    def reconstruct(self, x: Any, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at the posterior mean: x [B, *data_shape] -> [B, *data_shape]."""
        x = self._batch(x, 'reconstruct')
        y = self._labels(labels, x.shape[0], 'reconstruct')
        bind_fn = self._bind_fn('reconstruct')
        return np.asarray(self._reconstruct(bind_fn, self.variables, x, y))

    def sample(self, key: jax.Array, n: int, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at n draws z ~ N(0, I): [n, *data_shape].

        Args:
          key: the draw's key.
          n: how many.
          labels: [n] (or one int) class labels; required for a conditional run.
        """
        bind_fn = self._bind_fn('sample')
        if self.parts.static.prior != 'standard_normal':
            raise ValueError(
                f'sample: drawing from the learned prior model.prior.name='
                f'{self.parts.static.prior!r} is not implemented here; only the N(0, I) prior is.'
            )
        z = jax.random.normal(key, (n, self.latent_dim))
        y = self._labels(labels, n, 'sample')
        return np.asarray(self._decode_mean(bind_fn, self.variables, z, y))

    def log_likelihood(
        self,
        key: jax.Array,
        x: Any,
        k_samples: int = 5000,
        labels: Any = None,
        *,
        batch_size: int = evaluation.BATCH_SIZE,
    ) -> np.ndarray:
        """Importance-sampled log p(x) per example (Burda et al. 2016), in nats: [B].

        Computed exactly as `vae_jax.evaluate` computes the run's NLL (example n uses
        fold_in(key, n); a run trained with dynamic binarisation binarises x from that key), so
        with `key=model.eval_key` and the run's test images, -mean equals eval.json's 'nll'.

        Args:
          key: importance-sampling key.
          x: [B, *data_shape] in the likelihood's support.
          k_samples: importance samples per example.
          labels: [B] for a conditional run.
          batch_size: examples per jitted call (memory, not values).
        """
        x = self._batch(x, 'log_likelihood')
        y = self._labels(labels, x.shape[0], 'log_likelihood')
        out = evaluation.evaluate_dataset(
            key,
            np.asarray(x),
            np.asarray(y),
            self.parts.bind_fn,
            self.variables,
            k_list=(),
            nll_k=int(k_samples),
            batch_size=batch_size,
            dynamic_binarize=self.parts.static.dynamic_binarize,
            return_per_example=True,
            model_fn=self.parts.model_fn,
        )
        return out['per_example']['log_px']


def load(workdir: str | Path) -> TrainedModel:
    """Loads a trained run: its config and newest verified checkpoint, without any data.

    Args:
      workdir: a run directory written by `vae_jax.train` (config.json, checkpoints/).

    Returns:
      The model with its parameters bound (`TrainedModel`).

    Raises:
      FileNotFoundError: not a run directory, or no checkpoint yet.
      RuntimeError: the newest checkpoint is damaged.
    """
    parts = build(read_config(workdir))
    variables, step = restore_variables(workdir, parts)
    return TrainedModel(parts, variables, step)


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
      parts: the model (`build`).
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
