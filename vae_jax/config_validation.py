"""Config validation: every field with a domain, checked once at trainer start.

Each failure is a `ValueError` that names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from vae_jax import data, objectives, writer_config

LOOPS = ('scan', 'unroll')
PIPELINES = ('device', 'stream', 'auto')  # input.pipeline (vae_jax/streaming.py)
BINARIZE = ('none', 'static', 'dynamic')
POSTERIORS = ('diagonal', 'full')
SCALE_TRANSFORMS = ('softplus', 'exp')
LIKELIHOODS = ('bernoulli', 'continuous_bernoulli', 'gaussian')
GAUSSIAN_SIGMAS = ('fixed', 'learned', 'per_pixel')
OPTIMIZERS = ('adam', 'adamw', 'rmsprop', 'sgd')
SCHEDULES = ('constant', 'cosine', 'stages')
PRIORS = ('standard_normal', 'mog', 'vamp')


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    value = config
    for part in key.split('.'):
        value = value[part]
    return value


def _check(config, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
    value = _get(config, key)
    try:
        good = ok(value)
    except TypeError:
        good = False
    if not good:
        raise ValueError(f'config.{key}={value!r} is invalid; allowed: {allowed}')


def _one_of(config, key: str, options: Iterable[str]) -> None:
    options = tuple(options)
    _check(config, key, lambda v: v in options, ' | '.join(repr(o) for o in options))


def _int_at_least(config, key: str, low: int) -> None:
    _check(
        config,
        key,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
        f'an integer >= {low}',
    )


def _number(config, key: str, ok: Callable[[float], bool], allowed: str) -> None:
    _check(
        config,
        key,
        lambda v: (
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and ok(v)
        ),
        allowed,
    )


def _bool(config, key: str) -> None:
    _check(config, key, lambda v: isinstance(v, bool), 'True | False')


def _requires(config, key: str, applies: bool, condition: str, allowed: str) -> None:
    """A key whose non-default value would be silently ignored unless `condition` holds."""
    if not applies:
        raise ValueError(
            f'config.{key}={_get(config, key)!r} applies only when {condition}; '
            f'allowed here: {allowed}'
        )


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises `ValueError` naming the first bad key, its value and the allowed values.

    Checks domains (names, positive rates, counts >= 1, probabilities in range), combinations
    that would otherwise be silently ignored (e.g. a gradient estimator with the ELBO objective,
    weight decay with plain Adam), and what the data set's static description decides (a
    conditional VAE needs labels). Checks that need the data (likelihood support, batch size
    against the number of examples, layer specs against the data shape) run where the data and
    the model are built (`trainer.Run`).
    """
    _check(config, 'seed', lambda v: isinstance(v, int) and not isinstance(v, bool), 'an integer')
    # The objective and its options, each checked from its declaration (vae_jax.objectives).
    objectives.validate(config)
    _number(config, 'beta', lambda v: v >= 0, 'a finite number >= 0')
    _int_at_least(config, 'beta_warmup_steps', 0)
    writer_config.validate(config)  # logging.* values (the packages: writers.require_trackers)

    _int_at_least(config, 'num_train_steps', 0)
    for key in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
        _int_at_least(config, key, 1)
    if config.checkpoint_every_steps % config.log_every_steps:
        raise ValueError(
            f'config.checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple '
            f'of config.log_every_steps={config.log_every_steps}, so that a resumed run logs the '
            'same rows as an uninterrupted one'
        )
    _int_at_least(config, 'keep_checkpoints', 1)
    _int_at_least(config, 'steps_per_call', 1)
    _one_of(config, 'loop', LOOPS)
    _check(
        config,
        'eval_k_samples',
        lambda v: (
            len(v) >= 1
            and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in v)
        ),
        'a non-empty tuple of integers >= 1',
    )
    _check(
        config,
        'num_eval_examples',
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        'None or an integer >= 1',
    )
    _bool(config, 'skip_nonfinite_updates')

    _check(config, 'input.dataset', data.is_dataset_name, data.ALLOWED_NAMES)
    _check(config, 'input.data_dir', lambda v: v is None or isinstance(v, str), 'None or a path')
    # The config.json of a run recorded before these keys existed lacks them: they read as unset.
    if 'path' in config.input:
        _check(config, 'input.path', lambda v: v is None or isinstance(v, str), 'None or a path')
    if 'download' in config.input:
        _bool(config, 'input.download')
    _int_at_least(config, 'input.batch_size', 1)
    _int_at_least(config, 'input.eval_batch_size', 1)
    _one_of(config, 'input.binarize', BINARIZE)
    _bool(config, 'input.pad_to_32')
    for key in ('input.num_train_examples', 'input.num_test_examples'):
        _check(
            config,
            key,
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
            'None or an integer >= 1',
        )
    if 'pipeline' in config.input:  # Absent from the config.json of an older run.
        _one_of(config, 'input.pipeline', PIPELINES)
        _number(config, 'input.device_budget_gb', lambda v: v >= 0, 'a finite number >= 0')
    _int_at_least(config, 'input.toy_num_examples', 1)
    _number(config, 'input.toy_noise', lambda v: v >= 0, 'a finite number >= 0')
    # Combinations (binarize / pad_to_32 on toy sets, input.path only with npz, download only
    # with TFDS sets) and the recorded input.data_shape / input.num_classes.
    data.validate_config(config.input)

    _int_at_least(config, 'model.latent_dim', 1)
    for key in ('model.encoder', 'model.decoder'):
        _check(config, key, lambda v: isinstance(v, str), 'a layer spec string (models.py)')
    _one_of(config, 'model.posterior', POSTERIORS)
    _one_of(config, 'model.scale_transform', SCALE_TRANSFORMS)
    _one_of(config, 'model.likelihood', LIKELIHOODS)
    _one_of(config, 'model.gaussian_sigma', GAUSSIAN_SIGMAS)
    if config.model.gaussian_sigma != 'fixed':
        _requires(
            config,
            'model.gaussian_sigma',
            config.model.likelihood == 'gaussian',
            f"model.likelihood='gaussian' (here {config.model.likelihood!r})",
            "'fixed'",
        )
    _number(config, 'model.sigma', lambda v: v > 0, 'a finite number > 0')
    _bool(config, 'model.use_labels')
    _int_at_least(config, 'model.num_classes', 1)
    if config.model.use_labels:
        info = data.dataset_info(config.input)
        where = (
            f'config.input.path={config.input.path!r}'
            if config.input.dataset == data.NPZ
            else f'config.input.dataset={config.input.dataset!r}'
        )
        if not info['has_labels']:
            labelled = [
                n for n in data.DATASETS if n != data.NPZ and data.dataset_info(n)['has_labels']
            ]
            raise ValueError(
                f'config.model.use_labels=True (a conditional VAE) needs labels, but {where} has '
                'none; allowed: use_labels=False, or a labelled data set ('
                + ', '.join(labelled)
                + ", an .npz with 'train_labels' and 'test_labels', or a 'tfds:<name>' set with "
                "a 'label' feature)"
            )
        if config.model.num_classes < info['num_classes']:
            # one_hot of a label >= num_classes is all zeros: the condition would vanish.
            raise ValueError(
                f'config.model.num_classes={config.model.num_classes} is smaller than the '
                f'{info["num_classes"]} classes of {where}; allowed: an '
                f'integer >= {info["num_classes"]}'
            )
    _number(config, 'model.batch_norm_momentum', lambda v: 0 <= v < 1, 'a number in [0, 1)')
    _validate_prior_and_module(config)

    _one_of(config, 'optim.name', OPTIMIZERS)
    _number(config, 'optim.learning_rate', lambda v: v > 0, 'a finite number > 0')
    _one_of(config, 'optim.schedule', SCHEDULES)
    _int_at_least(config, 'optim.warmup_steps', 0)
    for key in ('optim.b1', 'optim.b2'):
        _number(config, key, lambda v: 0 <= v < 1, 'a number in [0, 1)')
    _number(config, 'optim.eps', lambda v: v > 0, 'a finite number > 0')
    _number(config, 'optim.weight_decay', lambda v: v >= 0, 'a finite number >= 0')
    if config.optim.weight_decay > 0:
        _requires(
            config,
            'optim.weight_decay',
            config.optim.name == 'adamw',
            f"optim.name='adamw' (here {config.optim.name!r})",
            '0.0',
        )
    _number(config, 'optim.momentum', lambda v: 0 <= v < 1, 'a number in [0, 1)')
    if config.optim.momentum > 0:
        _requires(
            config,
            'optim.momentum',
            config.optim.name in ('rmsprop', 'sgd'),
            f"optim.name is 'rmsprop' or 'sgd' (here {config.optim.name!r})",
            '0.0',
        )
    _check(
        config,
        'optim.grad_clip_norm',
        lambda v: (
            v is None
            or (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v > 0
            )
        ),
        'None or a finite number > 0',
    )
    _int_at_least(config, 'optim.num_stages', 1)
    _int_at_least(config, 'optim.stage_base', 1)
    _number(config, 'optim.stage_decay', lambda v: 0 < v <= 1, 'a number in (0, 1]')


def _validate_prior_and_module(config: ml_collections.ConfigDict) -> None:
    """`model.prior` and `model.module` (your own model), and what they exclude."""
    m = config.model
    _one_of(config, 'model.prior.name', PRIORS)
    _int_at_least(config, 'model.prior.num_components', 1)
    if m.prior.name != 'standard_normal':
        if config.objective == 'autoencoder':
            raise ValueError(
                f'config.model.prior.name={m.prior.name!r} needs a probabilistic objective; '
                "config.objective='autoencoder' has no prior. Allowed: 'standard_normal'"
            )
        _requires(
            config,
            'free_bits',
            config.free_bits == 0,
            "model.prior.name='standard_normal' (free bits clamp the KL to N(0, I) per "
            f'dimension; here model.prior.name={m.prior.name!r})',
            '0.0',
        )
    if m.prior.name == 'vamp':
        if m.use_labels:
            raise ValueError(
                "config.model.prior.name='vamp' does not take labels (the pseudo-inputs have "
                'none), but config.model.use_labels=True; allowed with use_labels: '
                "'standard_normal', 'mog'"
            )
        if isinstance(m.encoder, str) and re.search(r'(^|[-\[])bn($|[-\]])', m.encoder):
            raise ValueError(
                f"config.model.prior.name='vamp' needs an encoder without BatchNorm (the "
                f'pseudo-inputs would enter its batch statistics), but config.model.encoder='
                f"{m.encoder!r} has 'bn'; allowed: the same spec without 'bn', or prior "
                "'standard_normal' / 'mog'"
            )
    _check(
        config,
        'model.module',
        lambda v: v is None or (isinstance(v, str) and v.count(':') == 1 and all(v.split(':'))),
        "None or an import path 'package.module:ClassName' of a Flax module that follows "
        'vae_jax.models.LatentVariableModel',
    )
    _check(
        config,
        'model.module_kwargs',
        lambda v: isinstance(v, ml_collections.ConfigDict),
        'a ConfigDict of keyword arguments for model.module',
    )
    if 'passed_from_python' in m:  # A key of vae_jax/config.py a hand-made config may lack.
        _check(
            config,
            'model.passed_from_python',
            lambda v: v is None or isinstance(v, str),
            "None (set by the trainer for a model passed from Python: 'package.module:Class(...)')",
        )
    if m.module is None:
        if m.module_kwargs.keys():
            raise ValueError(
                f'config.model.module_kwargs={m.module_kwargs.to_dict()!r} applies to '
                'config.model.module, which is None; allowed: set model.module, or leave '
                'module_kwargs empty'
            )
        return
    where = f'a model.module ({m.module!r}, which defines its own posterior and prior)'
    if config.objective == 'autoencoder':
        raise ValueError(
            f"config.objective='autoencoder' needs the layer-spec model, not {where}; "
            "allowed: 'elbo', 'iwae'"
        )
    _requires(
        config, 'free_bits', config.free_bits == 0, f'the layer-spec model, not {where}', '0.0'
    )
    if m.prior.name != 'standard_normal':
        raise ValueError(
            f'config.model.prior.name={m.prior.name!r} applies to the layer-spec model, not to '
            f"{where}; allowed: 'standard_normal' (the default, ignored by a module)"
        )
