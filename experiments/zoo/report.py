"""The zoo's leaderboard from its run directories: a Markdown table and NLL against training time.

    python experiments/zoo/report.py                      # prints the table, writes the plot
    python experiments/zoo/report.py --readme             # also puts it into README.md
    python experiments/zoo/report.py --workdirs /tmp/zoo  # another set of runs (plot there)

Reads, for every model of configs/zoo.py that has a run directory: `config.json`, `eval.json`
(the final evaluation by run.sh: NLL with k importance samples, -ELBO, KL, active units),
`timing.json` (run.sh's wall-clock seconds) and `metrics.jsonl` (steps/s of each logged window
and the periodic test bounds). Nothing is typed in by hand except the published numbers, each
with its source. Rows are sorted by NLL, best first; models without an NLL (the autoencoder)
come last.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
from configs import zoo  # noqa: E402

START, END = '<!-- zoo:start -->', '<!-- zoo:end -->'
STEPS_PER_PASS = zoo.STEPS_PER_EPOCH
# Published test NLLs on dynamically binarised MNIST after a FULL schedule (a different budget
# from this table's 40 passes): (nats, source). Only numbers for the same model family.
BURDA = 'Burda et al. 2016, Table 1 (3,280 passes)'
PUBLISHED = {
    'vae': (86.76, BURDA + ', VAE k=1'),
    'iwae': (85.54, BURDA + ', IWAE k=5'),
    'two_layer_vae': (85.33, BURDA + ', two layers, VAE k=1'),
    'two_layer_iwae': (83.89, BURDA + ', two layers, IWAE k=5'),
}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _metrics(workdir: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) of metrics.jsonl, sorted by step."""
    train, evals = [], []
    path = workdir / 'metrics.jsonl'
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            (train if 'train/loss' in row else evals if 'eval/elbo' in row else []).append(row)
    return sorted(train, key=lambda r: r['step']), sorted(evals, key=lambda r: r['step'])


def _train_seconds_at(train: list[dict]) -> list[tuple[int, float]]:
    """[(step, seconds of training up to it)] from each logged window's steps/s."""
    out, seconds, last = [], 0.0, 0
    for row in train:
        seconds += (row['step'] - last) / row['train/steps_per_sec']
        last = row['step']
        out.append((row['step'], seconds))
    return out


def _active_units(result: dict) -> str | None:
    """Active units; per stochastic layer for hierarchies. An IAF model's base sample 'z0' is
    not a layer of its own (its 'z' is the latent), so it is left out."""
    per_layer = {
        k.split('/', 1)[1]: v
        for k, v in result.items()
        if k.startswith('active_units/') and k != 'active_units/z0'
    }
    if not per_layer:
        count = result.get('active_units')
        return None if count is None else str(count)
    if len(per_layer) == 1:
        return str(next(iter(per_layer.values())))
    parts = ' + '.join(f'{v} ({k})' for k, v in sorted(per_layer.items()))
    return f'{sum(per_layer.values())} = {parts}'


def _samples(config: dict) -> str:
    k = config['k_samples']
    objective = config['objective']
    if objective == 'miwae':
        return f'{k} (M={config["miwae_m"]} x {k // config["miwae_m"]})'
    if objective == 'piwae':
        return f'{k} (encoder groups of {config["piwae_m"]})'
    return str(k)


def _objective(config: dict) -> str:
    o = config['objective']
    if o == 'iwae' and config['gradient_estimator'] != 'reparam':
        return f'iwae ({config["gradient_estimator"]})'
    if o == 'ciwae':
        return f'ciwae (beta={config["ciwae_beta"]})'
    if o == 'beta_tcvae':
        return f'beta_tcvae (TC weight {config["beta"]})'
    if o == 'elbo' and config['beta'] != 1:
        return f'elbo (beta={config["beta"]})'
    return o


def rows(workdirs: Path) -> list[dict]:
    """One dict per model with a run directory; NLL-sorted, best first."""
    out = []
    for model in zoo.MODELS:
        workdir = workdirs / model
        config = _read_json(workdir / 'config.json')
        if config is None:
            continue
        result = _read_json(workdir / 'eval.json') or {}
        timing = _read_json(workdir / 'timing.json') or {}
        train, evals = _metrics(workdir)
        seconds = _train_seconds_at(train)
        step = train[-1]['step'] if train else 0
        prior = config['model']['prior']['name']
        module = config['model']['module']
        out.append(
            {
                'model': model,
                'objective': _objective(config),
                'posterior / prior': (
                    'two layers'
                    if module and 'two_layer' in module
                    else 'IAF'
                    if module and 'IAF' in module
                    else prior
                ),
                'samples': _samples(config),
                'nll': result.get('nll'),
                'nll_k': result.get('nll_k'),
                'num_examples': result.get('num_examples'),
                'neg_elbo': None if result.get('elbo') is None else -result['elbo'],
                'kl': result.get('kl'),
                'recon': result.get('recon'),
                'active_units': _active_units(result),
                'passes': step / STEPS_PER_PASS,
                'train_seconds': timing.get('train_seconds'),
                's_per_epoch': seconds[-1][1] / (step / STEPS_PER_PASS) if seconds else None,
                'curve': [
                    (dict(seconds)[r['step']], -r['eval/iwae_k50'])
                    for r in evals
                    if 'eval/iwae_k50' in r and r['step'] in dict(seconds)
                ],
                'published': PUBLISHED.get(model),
            }
        )
    return sorted(out, key=lambda r: (r['nll'] is None, r['nll'] or 0.0))


def _fmt(value, spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


def table(models: list[dict]) -> str:
    lines = [
        '| # | model | objective | posterior / prior | samples per example | test NLL '
        '(k, images) | -ELBO | reconstruction | KL | active units | passes | training wall time '
        '| s / epoch | published NLL, full schedule (different budget) |',
        '| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: '
        '| --- |',
    ]
    for i, r in enumerate(models, 1):
        nll = '-' if r['nll'] is None else f'**{r["nll"]:.2f}** ({r["nll_k"]}, {r["num_examples"]})'
        wall = '-' if r['train_seconds'] is None else f'{r["train_seconds"] / 60:.1f} min'
        published = (
            '-' if r['published'] is None else f'{r["published"][0]:.2f} ({r["published"][1]})'
        )
        lines.append(
            f'| {i} | {r["model"]} | {r["objective"]} | {r["posterior / prior"]} | {r["samples"]} '
            f'| {nll} | {_fmt(r["neg_elbo"])} | {_fmt(r["recon"])} | {_fmt(r["kl"])} '
            f'| {r["active_units"] or "-"} '
            f'| {r["passes"]:.3g} | {wall} | {_fmt(r["s_per_epoch"], ".1f")} | {published} |'
        )
    return '\n'.join(lines)


def plot(models: list[dict], path: Path) -> None:
    """Test -IWAE_50 of the periodic evaluations (an upper bound on the NLL) against training
    seconds, and each model's final NLL as a marker at its end."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap('tab20').colors  # 14 models: tab10 would repeat colours
    for i, r in enumerate(models):
        if not r['curve'] and r['nll'] is None:
            continue
        xs = [s / 60 for s, _ in r['curve']]
        ys = [v for _, v in r['curve']]
        (line,) = ax.plot(xs, ys, label=r['model'], lw=1, color=colors[i % len(colors)])
        if r['nll'] is not None and r['curve']:
            ax.plot([xs[-1]], [r['nll']], 'o', color=line.get_color(), ms=4)
    ax.set_xlabel('training time (min, from steps/s; evaluations excluded)')
    ax.set_ylabel('test -IWAE_50 (lines), final NLL (dots), nats')
    ax.set_title(
        f'Model zoo, dynamically binarised MNIST, {zoo.NUM_EPOCHS} passes at batch 20: '
        'test bound against training time',
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdirs', type=Path, default=HERE / 'workdirs')
    parser.add_argument('--readme', action='store_true', help='write the table into README.md')
    args = parser.parse_args()
    models = rows(args.workdirs)
    if not models:
        raise SystemExit(f'no run directories of configs/zoo.py models in {args.workdirs}')
    # The table holds finished rows (trained and evaluated: timing.json); the rest are listed.
    finished = [r for r in models if r['train_seconds'] is not None]
    unfinished = [r for r in models if r['train_seconds'] is None]
    missing = [m for m in zoo.MODELS if m not in {r['model'] for r in models}]
    text = table(finished)
    if unfinished or missing:
        parts = [f'{r["model"]} ({r["passes"]:.3g} of {zoo.NUM_EPOCHS} passes)' for r in unfinished]
        text += (
            f'\n\n{len(finished)} of {len(zoo.MODELS)} rows finished. In progress: '
            f'{", ".join(parts) or "none"}. Not started: {", ".join(missing) or "none"}.'
        )
    print(text)
    plot_path = (HERE if args.readme else args.workdirs) / 'nll_vs_time.png'
    plot(finished, plot_path)
    print(f'wrote {plot_path}')
    if args.readme:
        readme = HERE / 'README.md'
        old = readme.read_text()
        if START not in old or END not in old:
            raise SystemExit(f'{readme} has no {START} ... {END} markers')
        new = re.sub(
            re.escape(START) + '.*?' + re.escape(END),
            lambda _: f'{START}\n{text}\n{END}',
            old,
            flags=re.S,
        )
        readme.write_text(new)
        print(f'wrote the table into {readme}')


if __name__ == '__main__':
    main()
