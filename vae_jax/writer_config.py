"""The writers a config may name (`config.logging.*`) and their validation.

Kept apart from `writers.py` (which opens the writers and imports `run_files`) so that config
validation can check `logging.*` without importing the writers; `writers` re-exports these.
"""

from __future__ import annotations

from typing import Any

import ml_collections

WRITERS = ('jsonl', 'tensorboard', 'mlflow', 'wandb')
# Trackers that need an optional extra: writer -> (module imported, extra of vae_jax).
EXTRAS = {'mlflow': ('mlflow', 'mlflow'), 'wandb': ('wandb', 'wandb')}
WANDB_MODES = ('online', 'offline', 'disabled')


def parse(text: Any) -> tuple[str, ...]:
    """The writer names of `config.logging.writers` ('jsonl,tensorboard' -> ('jsonl', ...)).

    Raises:
      ValueError: an unknown or repeated name, or a list without 'jsonl'.
    """
    names = tuple(t.strip() for t in str(text).split(',') if t.strip())
    unknown = [n for n in names if n not in WRITERS]
    if unknown or not names:
        raise ValueError(
            f'config.logging.writers={text!r} names unknown writers {unknown}; allowed: '
            f'comma-separated names from {", ".join(WRITERS)}, e.g. jsonl,tensorboard,mlflow'
        )
    if len(set(names)) != len(names):
        raise ValueError(f'config.logging.writers={text!r} repeats a name; allowed: distinct names')
    if 'jsonl' not in names:
        raise ValueError(
            f"config.logging.writers={text!r} leaves out jsonl; metrics.jsonl is the run's "
            'record (resume and scripts/aggregate.py read it); allowed: a list that includes jsonl'
        )
    return names


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the values of `config.logging` (`require_trackers` checks the packages).

    Raises:
      ValueError: a bad `logging.*` value (naming the key, value and what is allowed).
    """
    parse(config.logging.writers)
    mode = config.logging.wandb.mode
    if mode is not None and mode not in WANDB_MODES:
        raise ValueError(
            f'config.logging.wandb.mode={mode!r} is invalid; allowed: None (honour $WANDB_MODE) '
            f'or one of {", ".join(WANDB_MODES)}'
        )
    for key in ('logging.mlflow.experiment', 'logging.wandb.project'):
        value = config.logging[key.split('.')[1]][key.split('.')[2]]
        if not isinstance(value, str) or not value:
            raise ValueError(f'config.{key}={value!r} is invalid; allowed: a non-empty string')
