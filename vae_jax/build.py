"""Building a run's model from its config: keys, the module, the train state, config reading.

What the trainer, `vae_jax.load` and `checkpoints.export_params` share: a config's model without
any data (`build` -> `ModelParts`), the run's keys (`root_keys`), the initial train state
(`create_train_state`) and a run directory's config with the defaults of keys added since it was
written (`read_config`). The loaded-model API (`TrainedModel`) is `trained.py`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vae_jax import config as default_config
from vae_jax import config_validation, data, models, nnx_models, run_files, steps


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys from its seed: (init_key, loop_key, data_key, eval_key), typed [] keys."""
    init_key, loop_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    return init_key, loop_key, data_key, eval_key


def nnx_rngs(seed: int) -> nnx.Rngs:
    """The `rngs` an NNX model named by `model.module` is built with in a run of `seed`.

    `nnx.Rngs(params=nnx_models.params_seed(init_key))`: build the module with it in Python
    (`MyNNXVAE(..., rngs=build.nnx_rngs(config.seed))`) to get the parameters that the same run
    by import path starts from.
    """
    return nnx.Rngs(params=nnx_models.params_seed(root_keys(seed)[0]))


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """A config's model, without data: the Flax module and its one model function.

    Attributes:
      config: the experiment config.
      data_shape: one example's shape, e.g. (28, 28, 1) or (2,).
      static: the jitted step's settings (`steps.StepConfig`, with the model's capabilities).
      model: the Flax module (any `models.LatentVariableModel`; an NNX one adapted,
        `nnx_models.NNXModel`).
      model_fn: (variables, x [*event], y [] int or None) -> `losses.LatentModel`, evaluation
        mode (`steps.make_model_fn`): how evaluation, pictures and `vae_jax.load` see the model.
    """

    config: ml_collections.ConfigDict
    data_shape: tuple[int, ...]
    static: steps.StepConfig
    model: nn.Module | nnx_models.NNXModel
    model_fn: Callable[..., Any]


def build(
    config: ml_collections.ConfigDict,
    data_shape: tuple[int, ...] | None = None,
    model: nn.Module | nnx.Module | None = None,
    dataset_size: int = 0,
) -> ModelParts:
    """The model of `config` (or `model`, any module that follows the model protocol).

    Args:
      config: the experiment config (validated here).
      data_shape: one example's shape; default: computed from `config.input` without any data.
      model: a Flax module (Linen or NNX) to use instead of the one `config.model` describes.
      dataset_size: training examples (beta-TCVAE's minibatch weights); 0 where no step runs.

    Raises:
      ValueError: a bad config value (naming the key, the value and what is allowed), or a
        module that does not follow the protocol.
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
    model_fn = steps.make_model_fn(model.apply, static)
    return ModelParts(config, data_shape, static, model, model_fn)


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
