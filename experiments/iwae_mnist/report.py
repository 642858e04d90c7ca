"""Status of the IWAE-paper runs: a Markdown table and the curves of the bounds against passes.

    python experiments/iwae_mnist/report.py      # prints the table, writes curves.png

Reads `workdirs/<objective>_k<K>/metrics.jsonl` (and `eval.json`, written by the k=5000
evaluation at the end of a finished run). The curves: the test bound -IWAE_50 of the periodic
evaluations (every 30 passes, 10,000 test images; an upper bound on the NLL) and the training
loss of each pass (the row's own objective, -ELBO or -IWAE_k, on dynamically binarised training
batches), with the paper's NLL of each row as a dotted line.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS_PER_PASS = 3_000  # 60,000 images / batch 20
TOTAL_PASSES = 3_280
# (workdir, label, paper NLL): Burda et al. (2016), Table 1, one stochastic layer.
ROWS = (
    ('iwae_k1', 'VAE / IWAE k=1', 86.76),
    ('iwae_k5', 'IWAE k=5', 85.54),
    ('elbo_k5', 'VAE k=5', 86.47),
    ('elbo_k50', 'VAE k=50', 86.35),
    ('iwae_k50', 'IWAE k=50', 84.78),
)


def read_metrics(workdir: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) of a run's metrics.jsonl, each sorted by step."""
    train, evals = [], []
    path = workdir / 'metrics.jsonl'
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if 'train/loss' in row:
                train.append(row)
            if 'eval/iwae_k50' in row:
                evals.append(row)
    return sorted(train, key=lambda r: r['step']), sorted(evals, key=lambda r: r['step'])


def training_hours(train: list[dict]) -> float:
    """Wall hours of training (evaluations excluded): the sum over logged passes of their time."""
    seconds, last = 0.0, 0
    for row in train:
        seconds += (row['step'] - last) / row['train/steps_per_sec']
        last = row['step']
    return seconds / 3600


def table() -> str:
    lines = [
        '| row | paper NLL | ours NLL (k=5000) | difference | passes run | training wall time | '
        'latest test -IWAE_50 (passes) | active units | command |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ]
    for name, label, paper in ROWS:
        workdir = HERE / 'workdirs' / name
        train, evals = read_metrics(workdir)
        passes = train[-1]['step'] / STEPS_PER_PASS if train else 0
        ours = diff = '-'
        eval_path = workdir / 'eval.json'
        if eval_path.exists() and passes >= TOTAL_PASSES:
            # The trainer's own eval.json (no NLL) stands until run.sh's k=5000 evaluation.
            result = json.loads(eval_path.read_text())
            if result.get('nll_k') == 5000:
                nll = result['nll']
                ours, diff = f'{nll:.2f}', f'{nll - paper:+.2f}'
        latest = units = '-'
        if evals:
            e = evals[-1]
            latest = f'{-e["eval/iwae_k50"]:.2f} ({e["step"] / STEPS_PER_PASS:.0f})'
            units = f'{e["eval/active_units"]:.0f}'
        status = f'{passes:,.0f} of {TOTAL_PASSES:,}' if train else 'not started'
        if train and passes < TOTAL_PASSES:
            status += ' (partial)'
        hours = f'{training_hours(train):.1f} h' if train else '-'
        lines.append(
            f'| {label} | {paper:.2f} | {ours} | {diff} | {status} | {hours} | {latest} | {units} '
            f'| `experiments/iwae_mnist/run.sh {name.replace("_k", " ")}` |'
        )
    return '\n'.join(lines)


def plot(path: Path) -> None:
    fig, (ax_test, ax_train) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for (name, label, paper), color in zip(ROWS, colors[: len(ROWS)], strict=True):
        train, evals = read_metrics(HERE / 'workdirs' / name)
        if not train:
            continue
        if evals:
            ax_test.plot(
                [r['step'] / STEPS_PER_PASS for r in evals],
                [-r['eval/iwae_k50'] for r in evals],
                'o-', color=color, ms=3, label=label,
            )  # fmt: skip
        ax_train.plot(
            [r['step'] / STEPS_PER_PASS for r in train],
            [r['train/loss'] for r in train],
            color=color, lw=0.8, label=label,
        )  # fmt: skip
        for ax in (ax_test, ax_train):
            ax.axhline(paper, color=color, ls=':', lw=1)
    ax_test.set_title('test -IWAE_50 (10,000 images); dotted: paper NLL (k=5000)')
    ax_train.set_title("training loss per pass (the row's objective)")
    for ax in (ax_test, ax_train):
        ax.set_xscale('log')
        ax.set_xlabel('passes over the training set')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_test.set_ylim(84, 96)
    ax_train.set_ylim(84, 120)
    ax_test.set_ylabel('nats')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    print(table())
    plot(HERE / 'curves.png')
    print(f'wrote {HERE / "curves.png"}')
