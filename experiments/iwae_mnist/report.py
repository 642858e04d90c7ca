"""Status of the IWAE-paper runs: a Markdown table and the curves of the bounds against passes.

    python experiments/iwae_mnist/report.py            # prints the tables, writes curves.png
    python experiments/iwae_mnist/report.py --readme   # also puts them into README.md

Reads `workdirs/<objective>_k<K>/metrics.jsonl` (and `eval.json`, written by the k=5000
evaluation at the end of a finished run). The curves: the test bound -IWAE_50 of the periodic
evaluations (every 30 passes, 10,000 test images; an upper bound on the NLL) and the training
loss of each pass (the row's own objective, -ELBO or -IWAE_k, on dynamically binarised training
batches). The NLL (k=5000) is a different, smaller quantity than -IWAE_50, so it is not drawn as
a line against the curves: at the end of training (3,280 passes) a filled marker shows our
k=5000 NLL of each finished row and a hollow marker the paper's k=5000 NLL of the same row.
"""

from __future__ import annotations

import json
import re
import sys
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


def final_eval(workdir: Path) -> dict | None:
    """The k=5000 evaluation of the run's final checkpoint, or None before it has been written.

    The trainer's own eval.json (without an NLL) stands in the same place until run.sh's k=5000
    evaluation replaces it; an evaluation of an earlier checkpoint (a hand-run `vae_jax.evaluate`
    on an unfinished run) does not count either.
    """
    path = workdir / 'eval.json'
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    finished = result.get('step') == TOTAL_PASSES * STEPS_PER_PASS
    return result if finished and result.get('nll_k') == 5000 else None


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
        ours = diff = latest = units = '-'
        if evals:
            e = evals[-1]
            latest = f'{-e["eval/iwae_k50"]:.2f} ({e["step"] / STEPS_PER_PASS:.0f})'
            units = f'{e["eval/active_units"]:.0f}'
        if (result := final_eval(workdir)) is not None:
            nll = result['nll']
            ours, diff = f'**{nll:.2f}**', f'{nll - paper:+.2f}'
            units = f'{result["active_units"]}'
        status = f'{passes:,.0f} of {TOTAL_PASSES:,}' if train else 'not started'
        if train and passes < TOTAL_PASSES:
            status += ' (partial)'
        hours = f'{training_hours(train):.1f} h' if train else '-'
        lines.append(
            f'| {label} | {paper:.2f} | {ours} | {diff} | {status} | {hours} | {latest} | {units} '
            f'| `experiments/iwae_mnist/run.sh {name.replace("_k", " ")}` |'
        )
    return '\n'.join(lines)


def details() -> str:
    """The k=5000 evaluation of each finished row: the NLL beside the bounds it is compared with."""
    lines = [
        '| row (test split, 10,000 images) | NLL, k=5000 | -IWAE k=50 / 5 / 1 | -ELBO (recon + KL) '
        '| active units | evaluation wall time |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
    ]
    for name, label, _ in ROWS:
        result = final_eval(HERE / 'workdirs' / name)
        if result is None:
            continue
        bounds = ' / '.join(f'{-result[f"iwae_k{k}"]:.2f}' for k in (50, 5, 1))
        lines.append(
            f'| {label} | {result["nll"]:.2f} | {bounds} | {-result["elbo"]:.2f} '
            f'({result["recon"]:.2f} + {result["kl"]:.2f}) | {result["active_units"]} '
            f'| {result["eval_time_sec"] / 60:.1f} min |'
        )
    return '\n'.join(lines) if len(lines) > 2 else ''


def write_readme(text: str, path: Path = HERE / 'README.md') -> None:
    """Replaces the text between the README's `<!-- report:start -->` and `<!-- report:end -->`."""
    readme = path.read_text()
    pattern = re.compile(r'(<!-- report:start -->\n).*?(\n<!-- report:end -->)', re.DOTALL)
    if not pattern.search(readme):
        raise SystemExit(f'{path}: no <!-- report:start --> ... <!-- report:end --> markers')
    path.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), readme))


def plot(path: Path) -> None:
    fig, (ax_test, ax_train) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for (name, label, paper), color in zip(ROWS, colors[: len(ROWS)], strict=True):
        workdir = HERE / 'workdirs' / name
        train, evals = read_metrics(workdir)
        if not train:
            continue
        if evals:
            ax_test.plot(
                [r['step'] / STEPS_PER_PASS for r in evals],
                [-r['eval/iwae_k50'] for r in evals],
                'o-', color=color, ms=3, label=f'{label}: -IWAE_50',
            )  # fmt: skip
        ax_train.plot(
            [r['step'] / STEPS_PER_PASS for r in train],
            [r['train/loss'] for r in train],
            color=color, lw=0.8, label=label,
        )  # fmt: skip
        # Like with like: the k=5000 NLLs (ours where finished, the paper's) as end-of-training
        # markers, not as lines against the -IWAE_50 curves.
        ax_test.plot(TOTAL_PASSES, paper, 'D', mfc='none', mec=color, ms=8, mew=1.5)
        if (result := final_eval(workdir)) is not None:
            ax_test.plot(TOTAL_PASSES, result['nll'], 'D', color=color, ms=5)
    ax_test.plot([], [], 'D', color='0.3', ms=5, label='ours: NLL (k=5000), end of training')
    ax_test.plot([], [], 'D', mfc='none', mec='0.3', ms=8, mew=1.5, label='paper: NLL (k=5000)')
    ax_test.set_title('test set (10,000 images): -IWAE_50 during training, NLL at the end')
    ax_train.set_title("training loss per pass (the row's objective)")
    for ax in (ax_test, ax_train):
        ax.set_xscale('log')
        ax.set_xlabel('passes over the training set (log scale)')
        ax.set_ylabel('nats')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_test.set_ylim(84, 96)
    ax_train.set_ylim(84, 120)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    report = '\n\n'.join(part for part in (table(), details()) if part)
    print(report)
    if '--readme' in sys.argv[1:]:
        write_readme(report)
        print(f'wrote the tables into {HERE / "README.md"}')
    plot(HERE / 'curves.png')
    print(f'wrote {HERE / "curves.png"}')
