"""Tabulate and plot a sweep: one row per run directory.

    python scripts/aggregate.py runs/<sweep> [--out DIR]

Reads every run directory under `runs/<sweep>` (a directory with a config.json: those of
scripts/sweep_beta.sh and scripts/sweep_k.sh, `<sweep>/<value>`, and those of the vectorised sweep,
`<sweep>/beta=<b>,seed=<s>`): config.json for the swept values, eval.json for the test metrics
(written by the trainer; `nll` only after `python -m vae_jax.evaluate`) and metrics.jsonl for the
progress of unfinished runs. Writes into `--out` (default: the sweep directory):

- summary.md and summary.csv: the config keys that differ between runs, test ELBO, NLL (when
  evaluated), the IWAE bound at the run's own k, reconstruction, KL, active units, steps, wall
  time and status;
- rate_distortion.png when beta varies: reconstruction (distortion) against KL (rate), coloured
  by beta;
- nll_vs_k.png when k_samples varies: test NLL, -IWAE_k bound and -ELBO against k (log axis).

Prints the Markdown table. Exit status 1 when no run directory is found.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

# Keys shown first when they vary; others that vary follow in alphabetical order.
LEADING_KEYS = ('beta', 'k_samples', 'seed', 'objective')
IGNORED_PREFIXES = ('sweep.',)  # the vectorised sweep's own keys (unset in each model's config)


def _flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = tuple(v) if isinstance(v, list) else v
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metrics(path: Path) -> tuple[int | None, float | None]:
    """(last logged step, last train/steps_per_sec) of a metrics.jsonl."""
    step, rate = None, None
    if not path.is_file():
        return step, rate
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        step = row.get('step', step)
        rate = row.get('train/steps_per_sec', rate)
    return step, rate


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run directories under `sweep_dir`: those holding config.json (outside checkpoints/),
    and those holding only a train.log (a script run that failed before writing its config)."""
    runs = set()
    for name in ('config.json', 'train.log'):
        for path in sweep_dir.rglob(name):
            rel = path.relative_to(sweep_dir).parts
            if not any(p == 'checkpoints' or p.startswith('.') for p in rel):
                runs.add(path.parent)
    return sorted(runs)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per run: name, flattened config, eval.json (or {}), progress and status."""
    records = []
    for run in find_runs(sweep_dir):
        config = _flatten(_read_json(run / 'config.json') or {})
        ev = _read_json(run / 'eval.json') or {}
        last_step, rate = _metrics(run / 'metrics.jsonl')
        total = config.get('num_train_steps')
        if not config:
            status = 'failed before training (see train.log)'
        elif ev.get('step') is not None and ev.get('step') == total:
            status = 'finished'
        elif (run / 'eval.json').exists() and ev.get('step') is not None:
            status = f'evaluated at step {ev["step"]} of {total}'
        else:
            status = f'incomplete ({last_step or 0} of {total} steps)'
        name = str(run.relative_to(sweep_dir)) if run != sweep_dir else run.name
        records.append(
            {
                'name': name,
                'config': config,
                'eval': ev,
                'steps': ev.get('step', last_step),
                'steps_per_sec': ev.get('train_steps_per_sec', rate),
                'status': status,
            }
        )
    return records


def varying_keys(records: list[dict[str, Any]], swept: tuple[str, ...] = ()) -> list[str]:
    """Config keys whose values differ between runs, plus `swept`; the usual sweep keys first."""
    records = [r for r in records if r['config']]
    keys = set()
    for r in records:
        keys |= set(r['config'])
    varying = [
        k
        for k in keys
        if not k.startswith(IGNORED_PREFIXES)
        and (k in swept or len({repr(r['config'].get(k)) for r in records}) > 1)
    ]
    lead = [k for k in LEADING_KEYS if k in varying]
    return lead + sorted(k for k in varying if k not in lead)


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (1, str(value))
    return (0, float(value))


def swept_keys(sweep_dir: Path) -> tuple[str, ...]:
    """The keys named in `<sweep_dir>/sweep.json` (written by scripts/sweep.sh and sweep.py)."""
    info = _read_json(sweep_dir / 'sweep.json') or {}
    return tuple(info.get('keys', ()))


def rows(
    records: list[dict[str, Any]], swept: tuple[str, ...] = ()
) -> tuple[list[str], list[list[Any]]]:
    """Table header and rows (raw values; None where a metric is missing)."""
    keys = varying_keys(records, swept)
    records = sorted(
        records, key=lambda r: [_sort_key(r['config'].get(k, r['name'])) for k in keys]
    )
    nll_ks = {r['eval'].get('nll_k') for r in records if r['eval'].get('nll') is not None}
    nll_name = f'NLL (k={nll_ks.pop()})' if len(nll_ks) == 1 else 'NLL'
    header = ['run', *keys]
    header += ['test ELBO', nll_name, 'test IWAE_k (own k)', 'recon', 'KL', 'active units']
    header += ['test examples', 'steps', 'steps/s', 'wall time (s)', 'trained', 'status']
    out = []
    for r in records:
        ev, cfg = r['eval'], r['config']
        k = cfg.get('k_samples')
        sweep = ev.get('sweep')
        trained = f'vectorised ({sweep["num_models"]} models)' if sweep else 'separate'
        trained = trained if cfg else None
        out.append(
            [
                r['name'],
                *(_Value(cfg[key]) if key in cfg else None for key in keys),
                ev.get('elbo'),
                ev.get('nll'),
                ev.get(f'iwae_k{k}'),
                ev.get('recon'),
                ev.get('kl'),
                ev.get('active_units'),
                ev.get('num_examples'),
                r['steps'],
                r['steps_per_sec'],
                ev.get('wall_time_sec'),
                trained,
                r['status'],
            ]
        )
    return header, out


class _Value:
    """A config value in the table: printed as given (0.5, 2, 50), not as a metric."""

    def __init__(self, value: Any):
        self.value = value

    def __str__(self) -> str:
        v = self.value
        if isinstance(v, float) and not isinstance(v, bool):
            return f'{v:g}'
        if isinstance(v, tuple):
            return ','.join(str(x) for x in v)
        return str(v)


def _fmt(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, _Value):
        return str(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f'{value:.2f}' if abs(value) >= 1 or value == 0 else f'{value:.4g}'
    if isinstance(value, tuple):
        return ','.join(str(v) for v in value)
    return str(value)


def markdown(header: list[str], table: list[list[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in table]
    return '\n'.join(lines)


def write_csv(path: Path, header: list[str], table: list[list[Any]]) -> None:
    with path.open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in table:
            writer.writerow(['' if v is None else getattr(v, 'value', v) for v in row])


def plot_rate_distortion(records: list[dict[str, Any]], path: Path) -> bool:
    """Reconstruction against KL coloured by beta; False (no file) when there is nothing to plot."""
    points = [
        (r['config']['beta'], r['eval']['kl'], r['eval']['recon'], r['config'].get('seed'))
        for r in records
        if r['eval'].get('kl') is not None and r['eval'].get('recon') is not None
    ]
    if len({p[0] for p in points}) < 2:
        return False
    points.sort()
    betas = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    positive = all(b > 0 for b in betas)
    norm = matplotlib.colors.LogNorm() if positive else matplotlib.colors.Normalize()
    seeds = sorted({p[3] for p in points}, key=_sort_key)
    for seed in seeds:
        sel = [p for p in points if p[3] == seed]
        ax.plot([p[1] for p in sel], [p[2] for p in sel], color='0.75', lw=1, zorder=1)
    sc = ax.scatter(
        [p[1] for p in points],
        [p[2] for p in points],
        c=betas,
        cmap='viridis',
        norm=norm,
        s=50,
        zorder=2,
        edgecolors='k',
        linewidths=0.5,
    )
    for beta, kl, recon, _ in points:
        ax.annotate(f'{beta:g}', (kl, recon), textcoords='offset points', xytext=(5, 5), fontsize=8)
    # Lines of constant -ELBO = recon + KL (slope -1): the ELBO's view of the trade-off.
    kls = [p[1] for p in points]
    recons = [p[2] for p in points]
    lo, hi = min(kls), max(kls)
    pad = 0.05 * (hi - lo or 1.0)
    xs = [lo - pad, hi + pad]
    for total in sorted({round(k + r, 1) for k, r in zip(kls, recons, strict=True)})[:1]:
        ax.plot(xs, [total - x for x in xs], ls='--', color='tab:red', lw=0.8, zorder=0)
        ax.text(xs[0], total - xs[0], ' best -ELBO', color='tab:red', fontsize=8, va='bottom')
    ax.set_xlim(xs)
    ax.set_ylim(min(recons) - 0.05 * (max(recons) - min(recons) or 1.0), None)
    bar = fig.colorbar(sc, ax=ax, label='beta')
    ticks = sorted(set(betas))
    bar.ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    bar.set_ticks(ticks, labels=[f'{b:g}' for b in ticks])
    ax.set_xlabel('rate: KL(q(z|x) || p(z)) on the test set (nats)')
    ax.set_ylabel('distortion: -E_q log p(x|z) on the test set (nats)')
    ax.set_title('Rate-distortion over beta' + (f' ({len(seeds)} seeds)' if len(seeds) > 1 else ''))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_k(records: list[dict[str, Any]], path: Path) -> bool:
    """Test NLL, -IWAE_k (own k) and -ELBO against k on a log axis; False when k does not vary."""
    by_k = sorted(
        (r for r in records if r['eval'].get('elbo') is not None),
        key=lambda r: r['config']['k_samples'],
    )
    if len({r['config']['k_samples'] for r in by_k}) < 2:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ks = [r['config']['k_samples'] for r in by_k]
    series = [  # label, eval.json key, line style, sign, label offset (points)
        ('NLL (-log p(x), importance-sampled)', 'nll', 'o-', 1.0, (5, -11)),
        ('-IWAE bound with the training k', 'iwae_own', 's--', -1.0, (5, -11)),
        ('-ELBO (k=1, analytic KL)', 'elbo', '^:', -1.0, (5, 5)),
    ]
    for label, name, style, sign, offset in series:
        xs, ys = [], []
        for k, r in zip(ks, by_k, strict=True):
            value = r['eval'].get(f'iwae_k{k}' if name == 'iwae_own' else name)
            if value is not None:
                xs.append(k)
                ys.append(sign * value)
        if xs:
            (line,) = ax.plot(xs, ys, style, label=label)
            for x, y in zip(xs, ys, strict=True):
                # In the line's colour: where two curves nearly meet (k=1: the IWAE bound is the
                # one-sample ELBO), the offsets alone do not say which label is whose.
                ax.annotate(
                    f'{y:.2f}',
                    (x, y),
                    textcoords='offset points',
                    xytext=offset,
                    fontsize=7,
                    color=line.get_color(),
                )
    ax.set_xscale('log')
    ax.margins(x=0.08, y=0.08)  # room for the labels at the ends
    ax.set_xticks(sorted(set(ks)))
    ax.set_xticklabels([str(k) for k in sorted(set(ks))])
    ax.set_xlabel('k (samples per example in training)')
    ax.set_ylabel('test set, nats per example (lower is better)')
    objectives = sorted({str(r['config'].get('objective')) for r in by_k})
    ax.set_title(f'Test NLL and bounds against k ({", ".join(objectives)})')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def aggregate(sweep_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Writes summary.md, summary.csv and the plots that apply; returns what it wrote."""
    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    records = collect(sweep_dir)
    if not records:
        raise FileNotFoundError(f'no run directory (with a config.json) under {sweep_dir}')
    header, table = rows(records, swept_keys(sweep_dir))
    text = markdown(header, table)
    notes = [
        f"Sweep `{sweep_dir}`: {len(table)} runs. Test-set metrics from each run's eval.json, "
        'in nats per example: ELBO (analytic KL where available), NLL = -log p(x) estimated '
        'by importance sampling (`python -m vae_jax.evaluate`), the IWAE bound with the '
        "run's own training k, reconstruction -E_q log p(x|z), KL(q(z|x) || p(z)), active units "
        '(Burda et al. 2016: Var_x E_q[z_d] > 0.01). Wall time: the invocation that finished '
        'the run (for a vectorised sweep: the whole program, all models together).',
    ]
    (out_dir / 'summary.md').write_text('\n\n'.join([notes[0], text]) + '\n')
    write_csv(out_dir / 'summary.csv', header, table)
    written = {'summary.md': text, 'rows': len(table)}
    if plot_rate_distortion(records, out_dir / 'rate_distortion.png'):
        written['rate_distortion.png'] = True
    if plot_k(records, out_dir / 'nll_vs_k.png'):
        written['nll_vs_k.png'] = True
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('sweep_dir', type=Path, help='a sweep directory, e.g. runs/default_beta')
    parser.add_argument('--out', type=Path, default=None, help='output directory')
    args = parser.parse_args(argv)
    try:
        written = aggregate(args.sweep_dir, args.out)
    except FileNotFoundError as e:
        print(f'aggregate: {e}', file=sys.stderr)
        return 1
    print(written['summary.md'])
    out = args.out or args.sweep_dir
    files = ['summary.md', 'summary.csv'] + [k for k in written if k.endswith('.png')]
    print(f'wrote {", ".join(str(out / f) for f in files)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
