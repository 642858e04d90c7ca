"""The training loop's metric arithmetic: a log window's sums, its row, and its finiteness check.

`steps.train_chunk` returns each jitted call's metric sums; the loop adds them over a log window
(`add_sums`), turns them into a metrics.jsonl row (`window_row`) and stops a run whose row holds
NaN or inf (`check_finite`). Re-exported by `trainer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vae_jax import checkpoints


def scalar_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The scalar entries as '{prefix}/{name}'; a dict of scalars (e.g. active units per
    stochastic layer) as '{prefix}/{name}/{key}'; lists and None are left out."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for name, inner in v.items():
                if inner is not None and not isinstance(inner, dict) and np.ndim(inner) == 0:
                    out[f'{prefix}/{k}/{name}'] = float(inner)
        elif v is not None and np.ndim(v) == 0:
            out[f'{prefix}/{k}'] = float(v)
    return out


def add_sums(sums: dict[str, Any], chunk_sums: dict[str, Any], convert: Callable) -> None:
    """Adds one call's metric sums (host arrays) into `sums`, in place, through `convert`."""
    for k, v in chunk_sums.items():
        sums[k] = sums.get(k, 0.0) + convert(v)


def window_row(sums: dict[str, float], num_steps: int) -> dict[str, float]:
    """A log row from a window's metric sums: means over the updates that were applied.

    Args:
      sums: metric name -> sum over the window's steps (`steps.train_step` zeroes the metrics
        of a skipped step, see `skip_nonfinite_updates`; `steps.train_chunk` counts each
        call's sampled 'grad_norm' once per step of the call, so its mean is over calls).
      num_steps: steps in the window.

    Returns:
      {'train/<name>': mean over the applied updates (NaN if all were skipped), ...,
       'train/skipped': how many updates were skipped (a count, not a mean)}.
    """
    skipped = sums.get('skipped', 0.0)
    applied = num_steps - skipped
    row = {
        f'train/{k}': v / applied if applied > 0 else math.nan
        for k, v in sums.items()
        if k != 'skipped'
    }
    row['train/skipped'] = skipped
    return row


def check_finite(row: dict[str, float], start: int, end: int, manager) -> None:
    """Raises RuntimeError (and writes nonfinite.json) if a log row holds NaN or inf."""
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        what = f'non-finite {", ".join(bad)} between steps {start} and {end}'
        if row.get('train/skipped', 0) >= end - start:
            what += f' (all {end - start} updates were non-finite and skipped)'
        raise checkpoints.nonfinite_error(
            manager, what, {'steps': [start, end], 'nonfinite': bad, 'metrics': row}
        )
