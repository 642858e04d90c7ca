"""Command line: evaluate a trained run: importance-sampled NLL and pictures.

    python -m vae_jax.evaluate --workdir runs/x [--data_dir DIR] [--k_samples 5000] \
        [--split test] [--max_examples N] [--chunk_size 500] [--batch_size 100] [--seed S] \
        [--output eval.json]

Reads the run's config.json and latest checkpoint (a training or a parameters-only one), reads
the data set the config names from `--data_dir`, else `$TFDS_DATA_DIR`, else the run's own
`input.data_dir` (older runs stored one), evaluates the split with the protocol of
Burda et al. (2016) (test NLL = -log p(x) estimated with k = 5000 importance samples; dynamic
binarisation, if the run used it, draws each image once from the eval key), writes the metrics
and the protocol into a JSON file in the run directory, prints a table, and writes pictures.
Where the run's train split streams from files (`input.pipeline` 'stream', or 'auto' over
`input.device_budget_gb`), the evaluated split is read from its files one batch at a time, so a
test set larger than memory can be evaluated; elsewhere it is loaded (the test split without the
train split). The numbers are the same either way.

It never silently replaces a run's results: without `--output`, the results go into `eval.json`
(keeping keys the trainer wrote there, such as its training speed) and the pictures into
`images/` only if there is no eval.json or the new evaluation is at least as precise (the same
split, and the same or a larger k and number of examples). Otherwise they go into a file named
after the settings, e.g. `eval_k1000_n2000.json` (pictures into `eval_k1000_n2000_images/`), and
the command says so. `--output NAME` writes exactly there (replacing that file).

Flags are checked before anything is read; a failure ends with one line, `error: ...`, naming
the flag, file or key (`--traceback` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import tqdm
from absl import app, flags

from vae_jax import (
    build,
    cli,
    evaluation,
    input_transform,
    row_sources,
    run_eval,
    run_files,
    streaming,
    trained,
)
from vae_jax import pictures as vae_pictures

FLAGS = flags.FLAGS
load_config = build.read_config


def with_data_dir(config: ml_collections.ConfigDict, data_dir: str | None) -> None:
    """Sets `config.input.data_dir` (in place): `data_dir`, else $TFDS_DATA_DIR, else stored.

    A run records its data set by name; where the data lives is this machine's business, so the
    flag and the environment win over whatever directory the run's config may hold.
    """
    chosen = data_dir or os.environ.get('TFDS_DATA_DIR') or config.input.data_dir
    with config.unlocked():
        config.input.data_dir = chosen


# Without a terminal, a progress line at most this often (seconds).
PROGRESS_SECONDS = 30.0


class ExampleProgress:
    """A tqdm bar over examples when stderr is a terminal; else a plain line now and then.

    A bar's carriage-return redraws would fill a log file (`2>> train.log`), so without a
    terminal one line `<desc>: <done>/<total> examples` is printed at most every
    `PROGRESS_SECONDS`, and one at the end.
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True):
        self.enabled = enabled and jax.process_index() == 0
        terminal = sys.stderr.isatty()
        self.bar = tqdm.tqdm(
            total=total, desc=desc, unit='ex', disable=not (self.enabled and terminal)
        )
        self.total, self.desc, self.done = total, desc, 0
        self.last_line = time.time()

    def update(self, done: int) -> None:
        """`done` examples evaluated so far."""
        self.bar.update(done - self.done)
        self.done = done
        if self.enabled and self.bar.disable and time.time() - self.last_line >= PROGRESS_SECONDS:
            self._line()

    def _line(self) -> None:
        print(f'{self.desc}: {self.done}/{self.total} examples', file=sys.stderr, flush=True)
        self.last_line = time.time()

    def close(self) -> None:
        self.bar.close()
        if self.enabled and self.bar.disable:
            self._line()


def check_settings(
    *,
    k_samples: int,
    max_examples: int | None,
    chunk_size: int,
    batch_size: int,
    output: str | None,
) -> None:
    """Checks the evaluation settings before anything is loaded, in the command's flag names.

    Raises:
      ValueError: a setting out of range, naming the flag, its value and what is allowed.
    """
    checks = [
        ('k_samples', k_samples, k_samples >= 0, 'an integer >= 0 (0 skips the NLL)'),
        ('max_examples', max_examples, max_examples is None or max_examples >= 1, 'unset or >= 1'),
        ('chunk_size', chunk_size, chunk_size >= 1, 'an integer >= 1'),
        ('batch_size', batch_size, batch_size >= 1, 'an integer >= 1'),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f'--{name}={value} is invalid; allowed: {allowed}')
    if output is not None and (not output.endswith('.json') or Path(output).name != output):
        raise ValueError(
            f'--output={output!r} is invalid; allowed: a file name ending in .json (it is '
            'written inside --workdir)'
        )


def results_path(workdir: Path, output: str | None, result: dict[str, Any]) -> tuple[Path, str]:
    """Where an evaluation's results go, and why (see the module docstring).

    Args:
      workdir: the run directory.
      output: the file name asked for (`--output`), or None for the default rule.
      result: the new results ('split', 'nll_k', 'num_examples', optional 'seed_from' 'flag').

    Returns:
      (path of the JSON file, a sentence saying why it is not eval.json, or '' when it is the
      file asked for or eval.json).
    """
    if output is not None:
        return workdir / output, ''
    default = workdir / run_files.EVAL_FILE
    if not default.is_file():
        return default, ''
    try:
        old = json.loads(default.read_text())
    except json.JSONDecodeError:
        old = None
    if isinstance(old, dict):
        old_k = old.get('nll_k') or 0  # The trainer's eval.json estimates no NLL.
        old_n = old.get('num_examples') or 0
        if (
            old.get('split', 'test') == result['split']
            and result['nll_k'] >= old_k
            and result['num_examples'] >= old_n
        ):
            return default, ''
        held = f'{old.get("split", "test")} split, k={old_k}, {old_n} examples'
    else:
        held = 'a file that is not an evaluation'
    split = '' if result['split'] == 'test' else f'_{result["split"]}'
    seed = f'_seed{result["seed"]}' if result.get('seed_from') == 'flag' else ''
    name = f'eval{split}_k{result["nll_k"]}_n{result["num_examples"]}{seed}.json'
    why = (
        f'{default} holds a more precise or different evaluation ({held}) and is kept; pass '
        f'--output {run_files.EVAL_FILE} to replace it'
    )
    return workdir / name, why


def evaluate(
    workdir: str | Path,
    *,
    k_samples: int = 5000,
    split: str = 'test',
    max_examples: int | None = None,
    chunk_size: int = evaluation.CHUNK_SIZE,
    batch_size: int = evaluation.BATCH_SIZE,
    seed: int | None = None,
    output: str | None = None,
    pictures: bool = True,
    progress: bool = True,
    data_dir: str | None = None,
    allow_unverified_checkpoints: bool = False,
    model: Any = None,
    disentanglement: bool = False,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint of a run; writes its results and pictures.

    Where (`results_path`): `<workdir>/<output>` when `output` is given, else eval.json unless
    that holds a more precise evaluation, else a file named after the settings (said on stderr).
    Pictures go to `images/` beside eval.json, else to `<results file stem>_images/`.

    `data_dir` (else $TFDS_DATA_DIR, else the run's stored `input.data_dir`) is where a TFDS
    data set is read from. `allow_unverified_checkpoints` restores a checkpoint without a
    checksum, with a warning. `model` is the module a run trained from Python, where its
    config.json cannot rebuild it. The evaluation and its record are the trainer's own
    (`run_eval.evaluate_run`, `run_eval.record`): the same keys, and for the same key and
    settings the same values.

    Returns:
      The dict written to the results file: the protocol ('step', 'split', 'num_examples',
      'nll_k', 'k_list', 'binarize', 'seed', 'seed_from', 'chunk_size', 'batch_size') and the
      metrics of `evaluation.evaluate_dataset`.

    Raises:
      ValueError: a setting out of range (`check_settings`), or an invalid config.json.
      FileNotFoundError: not a run directory, no checkpoint, or the data set is not there.
      RuntimeError: the newest checkpoint is damaged or unverified.
    """
    check_settings(
        k_samples=k_samples,
        max_examples=max_examples,
        chunk_size=chunk_size,
        batch_size=batch_size,
        output=output,
    )
    workdir = Path(workdir)
    config = load_config(workdir)
    build.require_model(config, model, workdir)  # Before anything is read or written.
    with_data_dir(config, data_dir)
    # The test split of a set in files is read alone; where the run streams, read batch by batch.
    split_data, num_train = row_sources.evaluation_split(
        config.input, split, stream=streaming.streams_from_files(config.input, jax.device_count())
    )
    # The training set size only matters to beta-TCVAE's held-out terms.
    parts = build.build(config, model=model, dataset_size=num_train)
    variables, step = trained.restore_variables(
        workdir, parts, allow_unverified_checkpoints=allow_unverified_checkpoints
    )
    images, labels = split_data['image'], split_data['label']  # as stored (uint8 / bool)
    input_spec = input_transform.spec_from(config.input, images)
    if max_examples is not None:
        images, labels = images[:max_examples], labels[:max_examples]
    eval_key = build.root_keys(config.seed)[3]
    key = eval_key if seed is None else jax.random.key(seed)
    bar = ExampleProgress(images.shape[0], f'eval {split}', enabled=progress)
    start = time.time()
    try:
        metrics, per_example = run_eval.evaluate_run(
            parts,
            variables,
            images,
            labels,
            key=key,
            nll_k=k_samples,
            chunk_size=chunk_size,
            batch_size=batch_size,
            progress=lambda done, total: bar.update(done),
            step=step,
            input_spec=input_spec,
        )
    finally:
        bar.close()
    result = run_eval.record(
        config,
        step,
        metrics,
        split=split,
        nll_k=k_samples,
        chunk_size=chunk_size,
        batch_size=batch_size,
        seed=seed,
        evaluated_by='vae_jax.evaluate',
        eval_time_sec=time.time() - start,
    )
    if disentanglement:  # the trainer's end-of-run metrics (`run_eval.disentanglement`)
        result.update(run_eval.disentanglement(trained.TrainedModel(parts, variables, step)))
    path, why = results_path(workdir, output, result)
    if why:
        print(f'{why}; writing {path}', file=sys.stderr, flush=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    previous = previous if isinstance(previous, dict) else {}
    previous.pop('bits_per_dim', None)  # Absent where undefined: drop an earlier run's value.
    previous.pop('k_list', None)  # Written by earlier releases; now 'eval_k_samples'.
    run_files.write_json(path, {**previous, **result})
    if pictures:
        images_dir = 'images' if path.name == run_files.EVAL_FILE else f'{path.stem}_images'
        vae_pictures.write_pictures(
            workdir / images_dir,
            trained.TrainedModel(parts, variables, step),
            eval_key,
            vae_pictures.picture_rows(images, input_spec),
            labels,
            **vae_pictures.config_options(config),
            posterior_means=vae_pictures.posterior_means(per_example),
            metrics_path=workdir / run_files.METRICS_FILE,
        )
    result['results_file'] = str(path)  # Returned, not written: where the results went.
    return result


def format_table(result: dict[str, Any]) -> str:
    """The scalar metrics as a two-column text table."""
    rows = [
        (name, result[name])
        for name in (
            'nll',
            'bits_per_dim',
            *(f'iwae_k{k}' for k in result['eval_k_samples']),
            'elbo',
            'recon',
            'kl',
            'recon_error',
            'active_units',
        )
        if result.get(name) is not None
    ]
    header = (
        f'{result["split"]} split, {result["num_examples"]} examples, step {result["step"]}, '
        f'NLL with k={result["nll_k"]}, binarize={result["binarize"]}, seed={result["seed"]}'
    )
    width = max(len(name) for name, _ in rows)
    lines = [header, '-' * len(header)]
    for name, value in rows:
        text = f'{value:d}' if isinstance(value, int) else f'{value:.4f}'
        lines.append(f'{name:<{width}}  {text:>12}')
    return '\n'.join(lines)


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so that importing this module
    next to vae_jax.train, which also has --workdir, does not define a flag twice)."""
    flags.DEFINE_string('workdir', None, 'Run directory (config.json, checkpoints/).')
    flags.DEFINE_string(
        'data_dir',
        None,
        'TFDS data dir holding the data set the run names; default $TFDS_DATA_DIR, then the '
        "run's own input.data_dir.",
    )
    flags.DEFINE_integer(
        'k_samples',
        5000,
        'Importance samples for the NLL (Burda et al. 2016 use 5000); 0 skips it.',
    )
    flags.DEFINE_enum('split', 'test', ['test', 'train'], 'Which split to evaluate.')
    flags.DEFINE_integer('max_examples', None, 'Evaluate only the first N examples of the split.')
    flags.DEFINE_integer(
        'chunk_size',
        evaluation.CHUNK_SIZE,
        'Importance samples per scan step (memory, not values).',
    )
    flags.DEFINE_integer(
        'batch_size', evaluation.BATCH_SIZE, 'Examples per jitted call (memory, not values).'
    )
    flags.DEFINE_integer(
        'seed', None, "Evaluation seed; default: the run's own eval key (derived from config.seed)."
    )
    flags.DEFINE_string(
        'output',
        None,
        'File in --workdir to write the results to (replaced if it exists). Default: eval.json, '
        'unless it holds a more precise evaluation (larger k or more examples); then a new file '
        'named after the settings, e.g. eval_k1000_n2000.json.',
    )
    flags.DEFINE_bool(
        'pictures', True, 'Write pictures (into images/ beside eval.json, else <output>_images/).'
    )
    flags.DEFINE_bool(
        'allow_unverified_checkpoints',
        False,
        'Restore a checkpoint whose checksum is missing, with a warning (refused otherwise).',
    )
    flags.DEFINE_bool(
        'disentanglement',
        False,
        'Also the disentanglement metrics of a dsprites run (disentanglement/* and their '
        'settings, as at the end of training).',
    )
    flags.mark_flag_as_required('workdir')


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    result = evaluate(
        FLAGS.workdir,
        k_samples=FLAGS.k_samples,
        split=FLAGS.split,
        max_examples=FLAGS.max_examples,
        chunk_size=FLAGS.chunk_size,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        output=FLAGS.output,
        pictures=FLAGS.pictures,
        data_dir=FLAGS.data_dir,
        allow_unverified_checkpoints=FLAGS.allow_unverified_checkpoints,
        disentanglement=FLAGS.disentanglement,
    )
    print(format_table(result))
    print(f'wrote {result["results_file"]}')


if __name__ == '__main__':
    define_flags()
    cli.run(main)
