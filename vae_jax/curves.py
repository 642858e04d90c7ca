"""Training curves of a run from its metrics.jsonl: loss, the NLL with its bounds, recon and KL.

One PNG of up to three panels (`training_curves`), drawn with matplotlib's object API on the
Agg canvas (`vae_jax.canvas`), like the other pictures of `vae_jax.plots`, which re-exports
these names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vae_jax import canvas

CURVE_INCHES = (4.5, 3.5)  # one training-curve panel (width, height)
LOG_STEPS_RATIO = 100  # training curves use a log step axis when max / min step exceeds this


def _is_bound(name: str) -> bool:
    """ELBO and IWAE_k: lower bounds on log p(x), drawn negated as upper bounds on the NLL."""
    return name == 'elbo' or name.startswith('iwae_k')


# (title, y label, which metric names): -ELBO, -IWAE_k and the NLL share a panel, all of them
# estimates of or upper bounds on -log p(x) in nats, the same kind of number on one axis.
_CURVE_PANELS = (
    ('loss', 'loss', lambda name: name == 'loss'),
    (
        'NLL and its upper bounds -ELBO, -IWAE_k',
        'nats',
        lambda name: name == 'nll' or _is_bound(name),
    ),
    ('recon and KL', 'nats', lambda name: name in ('recon', 'kl')),
)


def training_curves(metrics_jsonl_path: str | Path, path: str | Path) -> np.ndarray:
    """Loss, the NLL with its bounds, and recon/KL over steps, from a run's metrics.jsonl.

    Each line is a JSON object with 'step' and keys like 'train/loss', 'eval/elbo',
    'eval/iwae_k10'. Panels (those with data): loss; the NLL with -ELBO and -IWAE_k (the bounds
    negated, so every curve is an upper bound on, or an estimate of, -log p(x) in nats); recon
    and KL. Train curves are solid, eval curves dashed with markers. The step axis is
    logarithmic when the steps span more than `LOG_STEPS_RATIO` (long runs), linear otherwise.

    Args:
      metrics_jsonl_path: the metrics.jsonl file.
      path: the PNG file to write.

    Returns:
      The RGB image written, uint8 [CURVE_INCHES[1] * DPI, P * CURVE_INCHES[0] * DPI, 3] for P
      panels (DPI: `canvas.DPI`).

    Raises:
      ValueError: the file has no plottable metrics.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in Path(metrics_jsonl_path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row.items():
            if '/' not in key or not isinstance(value, int | float):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(row['step'])
            values.append(float(value))
    panels = []
    for title, y_label, wanted in _CURVE_PANELS:
        keys = sorted(k for k in series if wanted(k.split('/', 1)[1]))
        if keys:
            panels.append((title, y_label, keys))
    if not panels:
        raise ValueError(
            f'{metrics_jsonl_path} has no loss/elbo/iwae/recon/kl metrics to plot '
            f'(keys found: {sorted(series)})'
        )
    all_steps = [step for key, _, keys in panels for k in keys for step in series[k][0]]
    positive = [step for step in all_steps if step > 0]
    log_x = bool(positive) and max(positive) > LOG_STEPS_RATIO * min(positive)
    width, height = CURVE_INCHES
    fig = Figure(figsize=(len(panels) * width, height), dpi=canvas.DPI, layout='constrained')
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, y_label, keys) in zip(axes, panels, strict=True):
        # One colour per metric, so train/elbo and eval/elbo match; eval is dashed with markers.
        names = sorted({k.split('/', 1)[1] for k in keys})
        for key in keys:
            steps, values = series[key]
            name = key.split('/', 1)[1]
            sign, label = (-1.0, f'-{key}') if _is_bound(name) else (1.0, key)
            style = {'color': f'C{names.index(name) % 10}'}
            if key.startswith('eval/'):
                style.update(linestyle='--', marker='o', markersize=3)
            elif len(steps) == 1:  # A line through one point draws nothing.
                style.update(marker='o', markersize=3)
            ax.plot(steps, sign * np.asarray(values), label=label, **style)
        ax.set_title(title, fontsize='medium')
        ax.set_xlabel('step (log scale)' if log_x else 'step')
        ax.set_ylabel(y_label)
        if log_x:
            ax.set_xscale('log')
        ax.legend(fontsize='small')
        ax.grid(alpha=0.3)
    return canvas.render(fig, path)
