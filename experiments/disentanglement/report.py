"""The dSprites leaderboard from its run directories: mean +- sd over seeds, as a Markdown table.

    python experiments/disentanglement/report.py                 # prints the table
    python experiments/disentanglement/report.py --readme        # also puts it into README.md
    python experiments/disentanglement/report.py --workdirs /tmp/dis

Reads `<workdirs>/<row>/seed<s>/` for every row of run.sh: `eval.json` (written by the trainer
at the end of the run: reconstruction, KL, active units and `disentanglement/*` with their
settings) and `timing.json` (run.sh's wall-clock seconds). Only finished runs (with both files)
count; the table says how many seeds each row has. The sd is the sample standard deviation over
seeds (n - 1); with one seed it is left out. Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = '<!-- leaderboard:start -->', '<!-- leaderboard:end -->'
ROWS = {  # row -> what it trains (configs/dsprites_*.py; README.md's protocol table)
    'vae': 'VAE',
    'beta_vae': 'beta-VAE',
    'annealed_vae': 'AnnealedVAE',
    'factor_vae': 'FactorVAE',
    'dip_vae_i': 'DIP-VAE-I',
    'dip_vae_ii': 'DIP-VAE-II',
    'beta_tcvae': 'beta-TCVAE',
}
# (eval.json key, column title, format)
COLUMNS = (
    ('disentanglement/beta_vae', 'beta-VAE score', '.3f'),
    ('disentanglement/factor_vae', 'FactorVAE score', '.3f'),
    ('disentanglement/mig', 'MIG', '.3f'),
    ('disentanglement/dci_disentanglement', 'DCI D', '.3f'),
    ('disentanglement/dci_completeness', 'DCI C', '.3f'),
    ('disentanglement/dci_informativeness', 'DCI I', '.3f'),
    ('disentanglement/sap', 'SAP', '.3f'),
    ('recon', 'reconstruction (nats)', '.2f'),
    ('kl', 'KL (nats)', '.2f'),
    ('active_units', 'active units', '.1f'),
)


def finished_runs(workdirs: Path, row: str) -> list[dict]:
    """eval.json of each finished seed of `row` (with its training minutes), by seed."""
    out = []
    for seed_dir in sorted((workdirs / row).glob('seed*')):
        result, timing = seed_dir / 'eval.json', seed_dir / 'timing.json'
        if result.exists() and timing.exists():
            run = json.loads(result.read_text())
            run['train_minutes'] = json.loads(timing.read_text())['train_seconds'] / 60
            run['seed_dir'] = seed_dir
            out.append(run)
    return out


def _cell(values: list[float], spec: str) -> str:
    if not values:
        return '-'
    mean = format(statistics.fmean(values), spec)
    return mean if len(values) == 1 else f'{mean} +- {format(statistics.stdev(values), spec)}'


def table(workdirs: Path) -> str:
    head = ['row', 'seeds'] + [title for _, title, _ in COLUMNS] + ['training (min)']
    lines = ['| ' + ' | '.join(head) + ' |', '| --- | ---: |' + ' ---: |' * (len(head) - 2)]
    settings = None
    for row, name in ROWS.items():
        runs = finished_runs(workdirs, row)
        if not runs:
            continue
        settings = settings or runs[0].get('disentanglement/settings')
        cells = [name, str(len(runs))]
        for key, _, spec in COLUMNS:
            cells.append(_cell([r[key] for r in runs if r.get(key) is not None], spec))
        cells.append(_cell([r['train_minutes'] for r in runs], '.1f'))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if settings:
        shown = {k: v for k, v in settings.items() if k != 'time_sec'}
        lines += ['', f'Metric settings (eval.json `disentanglement/settings`): `{shown}`']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdirs', type=Path, default=HERE / 'workdirs')
    parser.add_argument('--readme', action='store_true', help='write the table into README.md')
    args = parser.parse_args()
    text = table(args.workdirs)
    print(text)
    if args.readme:
        readme = HERE / 'README.md'
        content = readme.read_text()
        if START not in content or END not in content:
            raise SystemExit(f'error: {readme} has no {START} ... {END} markers for the table')
        before, rest = content.split(START, 1)
        after = rest.split(END, 1)[1]
        readme.write_text(f'{before}{START}\n{text}\n{END}{after}')


if __name__ == '__main__':
    main()
