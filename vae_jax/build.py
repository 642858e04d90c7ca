"""Building a run's model from its config: keys, the module, the train state, config reading.

What the trainer, `vae_jax.load` and `checkpoints.export_params` share: a config's model without
any data (`build` -> `ModelParts`), the run's keys (`root_keys`), the initial train state
(`create_train_state`) and a run directory's config with the defaults of keys added since it was
written (`read_config`). The loaded-model API (`TrainedModel`) is `trained.py`.

A model passed from Python (`train_and_evaluate(config, workdir, model=...)`) is recorded in the
run's config (`record_model`): by its import path and dataclass fields (`model.module`,
`model.module_kwargs`) when that rebuilds an equal module, so every entry point rebuilds it as
if `--config.model.module` had named it; and always by its description
(`model.passed_from_python`), which a resume or a load with `model=` is checked against. A run
whose model cannot be rebuilt is refused, before anything is touched, by every entry point that
is not given the model again (`require_model`, `ModelNotRebuildable`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
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

from vae_jax import (
    aux_networks,
    config_validation,
    data,
    models,
    nnx_models,
    protocol,
    run_files,
    steps,
)


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
    require_model(config, model)
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
    """Parameters (and BatchNorm statistics) initialised from `key`, with an int32 step 0.

    The objective's auxiliary networks, if any, get their parameters from `key` folded with
    their own salt (`aux_networks.init`), and their own optimizer states, in `state.aux`.
    """
    aux = aux_networks.init(key, parts.static)  # Folds `key` before the model consumes it.
    variables = models.init_variables(
        parts.model, key, parts.data_shape, bool(parts.config.model.use_labels)
    )
    state = steps.TrainState.create(
        apply_fn=parts.model.apply,
        params=variables['params'],
        tx=tx,
        batch_stats=variables.get('batch_stats', {}),
        aux=aux,
    )
    # An int32 array step keeps the scan carry's type fixed across calls.
    return state.replace(step=jnp.zeros((), jnp.int32))


# Reads, completes (keys added since the run take their defaults) and validates
# `<workdir>/config.json`; errors name the file and the key.
read_config = run_files.read_config


class ModelNotRebuildable(ValueError):
    """The run trained a model passed from Python that its directory cannot rebuild."""


# Dataclass fields of every Linen module that are not the model's hyperparameters.
_MODULE_FIELDS = ('parent', 'name')


def model_fields(model: nn.Module) -> dict[str, Any]:
    """A Linen module's hyperparameters: its dataclass fields set at construction ({} if none)."""
    if not dataclasses.is_dataclass(model):
        return {}
    return {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.init and f.name not in _MODULE_FIELDS
    }


def describe_model(model: nn.Module) -> str:
    """'package.module:Class(field=value, ...)': the class and fields of a model from Python.

    A field that JSON cannot hold is written as `<its type name>` (comparable, not checkable).
    """
    cls = type(model)
    fields = ', '.join(f'{k}={_field_text(v)}' for k, v in sorted(model_fields(model).items()))
    return f'{cls.__module__}:{cls.__qualname__}({fields})'


def _field_text(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return f'<{type(value).__name__}>'


def described_class(description: str) -> str:
    """The class of a `describe_model` description: 'package.module:Class'."""
    return description.split('(', 1)[0]


def import_path(cls: type) -> str | None:
    """'package.module:Class' when that path imports `cls` itself, else None.

    None for a class defined in `__main__` (another program's `__main__` is another module) or
    inside a function (`<locals>` in its qualified name), and for one its module no longer holds.
    """
    if cls.__module__ == '__main__' or '<locals>' in cls.__qualname__:
        return None
    try:
        found: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split('.'):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f'{cls.__module__}:{cls.__qualname__}' if found is cls else None


def _rebuild_path(model: nn.Module) -> tuple[str, dict[str, Any]] | str:
    """(path, JSON fields) that rebuild a module equal to `model`, else why not, in words."""
    if not dataclasses.is_dataclass(model):
        return 'it is not a dataclass (a Flax Linen module)'
    path = import_path(type(model))
    if path is None:
        return (
            'its class is not importable by a stable path (defined in __main__ or inside a '
            'function)'
        )
    try:
        stored = json.loads(json.dumps(model_fields(model)))
    except (TypeError, ValueError) as e:
        return f'its dataclass fields do not serialise to JSON ({e})'
    # As an entry point rebuilds it: config.json -> ConfigDict -> `models.create_model`.
    kwargs = ml_collections.ConfigDict(stored).to_dict()
    try:
        equal = protocol.build_module(path, kwargs) == model
    except Exception as e:  # noqa: BLE001 (any failure means: record it by name)
        return f'{path} does not rebuild from its fields ({type(e).__name__}: {e})'
    if not equal:
        return f'{path} rebuilt from its fields as JSON gives a different module'
    return path, stored


def record_model(config: ml_collections.ConfigDict, model: nn.Module) -> ml_collections.ConfigDict:
    """A copy of `config` that records `model`, a module passed from Python, for config.json.

    `model.passed_from_python` describes it (`describe_model`). Where its import path and
    fields rebuild an equal module (and the config with them validates), `model.module` and
    `model.module_kwargs` name them, so every entry point rebuilds it; otherwise both are unset
    and entry points without the model refuse the run (`require_model`).
    """
    recorded = copy.deepcopy(config)
    found = _rebuild_path(model)
    with recorded.unlocked():
        recorded.model.passed_from_python = describe_model(model)
        recorded.model.module = None
        recorded.model.module_kwargs = ml_collections.ConfigDict()
    if isinstance(found, tuple):
        candidate = copy.deepcopy(recorded)
        with candidate.unlocked():
            candidate.model.module = found[0]
            candidate.model.module_kwargs = ml_collections.ConfigDict(found[1])
        try:
            config_validation.validate(candidate)
            return candidate
        except ValueError:
            pass  # E.g. an option the config checks only for a module: record it by name.
    return recorded


def require_model(
    config: ml_collections.ConfigDict, model: nn.Module | None, workdir: str | Path | None = None
) -> None:
    """Checks that `config`'s run can be rebuilt: from itself, or from `model`, the recorded one.

    Args:
      config: a run's config (e.g. `read_config(workdir)`).
      model: the module passed from Python again, or None.
      workdir: the run directory, for the message.

    Raises:
      ModelNotRebuildable: the run trained a model passed from Python that it cannot rebuild,
        and `model` is None.
      ValueError: `model` is not the one the run recorded (class or fields differ).
    """
    recorded = config.model.get('passed_from_python')
    where = f'{workdir}: ' if workdir is not None else ''
    if recorded is None:
        return
    if model is None:
        if config.model.module is None:
            raise not_rebuildable(recorded, workdir)
        return
    if describe_model(model) != recorded:
        raise ValueError(
            f'{where}the run trained {recorded} (passed from Python), but model= is '
            f'{describe_model(model)}: pass the model it trained, or train this one in another '
            'workdir'
        )


def not_rebuildable(recorded: str, workdir: str | Path | None = None) -> ModelNotRebuildable:
    """The one message of every entry point for a run whose model must come from Python."""
    run = f'the run in {workdir}' if workdir is not None else 'this run'
    cls = described_class(recorded).split(':')[-1]
    return ModelNotRebuildable(
        f'{run} trained {cls} ({recorded}), a model passed from Python, which cannot be rebuilt '
        'from the run directory; pass the model again from Python: '
        'trainer.train_and_evaluate(config, workdir, model=...) to resume, '
        'vae_jax.load(workdir, model=...) to load, '
        'evaluate.evaluate(workdir, model=...) to evaluate. Nothing was changed'
    )


def run_model_config(
    config: ml_collections.ConfigDict, model: nn.Module | None, workdir: str | Path
) -> ml_collections.ConfigDict:
    """The config to train `workdir` with, given the model passed from Python (or None).

    A model passed from Python is recorded (`record_model`) and, on a resume, must be the one
    the run recorded. A resume without one (the command line) of a run that trained a model
    from Python takes the recorded model when its config names none, or is refused when that
    model cannot be rebuilt. A run written before models were recorded (its config.json has no
    `model.passed_from_python`) resumes as before, unrecorded.

    Raises:
      ModelNotRebuildable, ValueError: as `require_model`; nothing was touched.
    """
    path = Path(workdir) / run_files.CONFIG_FILE
    try:
        stored = json.loads(path.read_text()).get('model') if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        stored = None  # Reported by the trainer's own check of the workdir.
    if not isinstance(stored, dict) or 'passed_from_python' not in stored:
        return config if model is None or stored is not None else record_model(config, model)
    recorded = stored['passed_from_python']
    if model is not None:
        config = record_model(config, model)
        if recorded is None and (stored.get('module'), stored.get('module_kwargs') or {}) == (
            config.model.module,
            config.model.module_kwargs.to_dict(),
        ):
            # A run whose config named this model: resumed with it from Python, same record.
            with config.unlocked():
                config.model.passed_from_python = None
    if recorded is None:
        return config  # Its config names its model (or it is the built-in one).
    m = config.model
    if model is None and m.get('passed_from_python') is None:
        if stored.get('module') is None:
            raise not_rebuildable(recorded, workdir)
        if m.module not in (None, stored['module']):
            return config  # Another model: the trainer reports the different config.
        config = copy.deepcopy(config)
        with config.unlocked():
            if config.model.module is None:
                config.model.module = stored['module']
                config.model.module_kwargs = ml_collections.ConfigDict(
                    stored.get('module_kwargs') or {}
                )
            config.model.passed_from_python = recorded
        return config
    require_model(config_with(config, recorded), model, workdir)
    return config


def config_with(config: ml_collections.ConfigDict, recorded: str) -> ml_collections.ConfigDict:
    """`config` with `model.passed_from_python` = recorded (a copy)."""
    out = copy.deepcopy(config)
    with out.unlocked():
        out.model.passed_from_python = recorded
    return out
