"""The optimizer factory: `config.optim` -> an optax `GradientTransformation`."""

from __future__ import annotations

import ml_collections
import numpy as np
import optax

OPTIMIZERS = ('adam', 'adamw', 'rmsprop', 'sgd')
SCHEDULES = ('constant', 'cosine', 'stages')


def stage_boundaries(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> list[int]:
    """Step at which each stage of the 'stages' schedule ends (IWAE paper: 3^i epochs per stage).

    Returns:
      [num_stages] cumulative step counts; the last one is the schedule's full length.
    """
    epochs = [int(optim.stage_base) ** i for i in range(int(optim.num_stages))]
    return [int(x) * steps_per_epoch for x in np.cumsum(epochs)]


def create_learning_rate_schedule(
    optim: ml_collections.ConfigDict, *, steps_per_epoch: int, num_train_steps: int
) -> optax.Schedule:
    """The learning rate per step.

    'constant': learning_rate. 'cosine': cosine decay to 0 over num_train_steps.
    'stages' (Burda et al. 2016): stage i (i = 0..num_stages-1) lasts stage_base**i epochs at
    learning_rate * stage_decay**i. An optional linear warm-up of `warmup_steps` precedes each.
    """
    lr = float(optim.learning_rate)
    if optim.schedule == 'constant':
        schedule = optax.constant_schedule(lr)
    elif optim.schedule == 'cosine':
        schedule = optax.cosine_decay_schedule(lr, max(1, num_train_steps - optim.warmup_steps))
    elif optim.schedule == 'stages':
        ends = stage_boundaries(optim, steps_per_epoch)
        decay = float(optim.stage_decay)
        schedule = optax.piecewise_constant_schedule(lr, {end: decay for end in ends[:-1]})
    else:
        raise ValueError(
            f'optim.schedule={optim.schedule!r} is not supported; allowed: {SCHEDULES}'
        )
    if optim.warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, lr, optim.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [optim.warmup_steps])
    return schedule


def create_optimizer(
    optim: ml_collections.ConfigDict, *, steps_per_epoch: int, num_train_steps: int
) -> optax.GradientTransformation:
    """Builds the optimizer named by `optim.name`, with its schedule and optional clipping.

    Args:
      optim: the `config.optim` sub-dict.
      steps_per_epoch: optimizer steps per pass over the training split (for 'stages').
      num_train_steps: total steps (for 'cosine').

    Returns:
      An optax transformation; gradient clipping by global norm comes first when
      `optim.grad_clip_norm` is set.
    """
    lr = create_learning_rate_schedule(
        optim, steps_per_epoch=steps_per_epoch, num_train_steps=num_train_steps
    )
    if optim.name == 'adam':
        tx = optax.adam(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    elif optim.name == 'adamw':
        tx = optax.adamw(
            lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
        )
    elif optim.name == 'rmsprop':
        tx = optax.rmsprop(lr, eps=optim.eps, momentum=optim.momentum or None)
    elif optim.name == 'sgd':
        tx = optax.sgd(lr, momentum=optim.momentum or None)
    else:
        raise ValueError(f'optim.name={optim.name!r} is not supported; allowed: {OPTIMIZERS}')
    if optim.grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
    return tx
