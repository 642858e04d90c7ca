"""Command line: evaluate a trained run: importance-sampled NLL and pictures.

    python -m vae_jax.evaluate --workdir runs/x [--k_samples 5000] [--split test] \
        [--max_examples N] [--chunk_size 500] [--batch_size 100] [--seed S] [--output eval.json]

Reads the run's config.json and latest checkpoint, evaluates the split with the protocol of
Burda et al. (2016) (test NLL = -log p(x) estimated with k = 5000 importance samples; dynamic
binarisation, if the run used it, draws each image once from the eval key), writes the metrics
and the protocol into `<workdir>/<output>` (keeping keys the trainer wrote there, such as its
training speed), prints a table, and writes pictures into `<workdir>/images`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import tqdm
from absl import app, flags

from vae_jax import checkpoints, evaluation, run_files, steps, trainer
from vae_jax import pictures as vae_pictures

FLAGS = flags.FLAGS


def load_config(workdir: Path) -> ml_collections.ConfigDict:
    """The run's config from `<workdir>/config.json` (written by the trainer).

    Raises:
      FileNotFoundError: no config.json (not a run directory).
    """
    path = workdir / run_files.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f'{path} not found: --workdir must be a run directory written by vae_jax.train'
        )
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    config.eval_k_samples = tuple(config.eval_k_samples)
    return config


def restore(run: trainer.Run, workdir: Path) -> tuple[steps.TrainState, int]:
    """The latest checkpoint of the run.

    Raises:
      FileNotFoundError: the run has no checkpoint yet.
    """
    state, step = checkpoints.load(workdir, run.create_train_state())
    if step is None:
        raise FileNotFoundError(
            f'no checkpoint in {workdir / "checkpoints"}: train the run first (vae_jax.train)'
        )
    return state, step


def evaluate(
    workdir: str | Path,
    *,
    k_samples: int = 5000,
    split: str = 'test',
    max_examples: int | None = None,
    chunk_size: int = evaluation.CHUNK_SIZE,
    batch_size: int = evaluation.BATCH_SIZE,
    seed: int | None = None,
    output: str = 'eval.json',
    pictures: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint of a run; writes `<workdir>/<output>` and pictures.

    Returns:
      The dict written to the output file: the protocol ('step', 'split', 'num_examples',
      'nll_k', 'k_list', 'binarize', 'seed', 'seed_from', 'chunk_size', 'batch_size') and the
      metrics of `evaluation.evaluate_dataset`.
    """
    workdir = Path(workdir)
    config = load_config(workdir)
    run = trainer.Run(config)
    state, step = restore(run, workdir)
    split_data = run.test_data if split == 'test' else run.train_data
    images, labels = split_data['image'], split_data['label']
    if max_examples is not None:
        images, labels = images[:max_examples], labels[:max_examples]
    key = run.eval_key if seed is None else jax.random.key(seed)
    bar = tqdm.tqdm(total=images.shape[0], desc=f'eval {split}', unit='ex', disable=not progress)
    start = time.time()
    try:
        metrics = evaluation.evaluate_dataset(
            key,
            images,
            labels,
            run.bind_fn,
            run.variables(state),
            k_list=tuple(config.eval_k_samples),
            nll_k=k_samples,
            chunk_size=chunk_size,
            batch_size=batch_size,
            dynamic_binarize=run.static.dynamic_binarize,
            progress=lambda done, total: bar.update(done - bar.n),
            return_per_example=True,
            model_fn=run.model_fn,
        )
    finally:
        bar.close()
    per_example = metrics.pop('per_example')
    result = {
        'step': step,
        'split': split,
        'num_examples': metrics['num_examples'],
        'nll_k': k_samples,
        'k_list': list(config.eval_k_samples),
        'binarize': config.input.binarize,
        # Without --seed the key is the run's eval key, split from jax.random.key(config.seed).
        'seed': config.seed if seed is None else seed,
        'seed_from': 'config' if seed is None else 'flag',
        'chunk_size': chunk_size,
        'batch_size': batch_size,
        'evaluated_by': 'vae_jax.evaluate',
        'eval_time_sec': round(time.time() - start, 2),
        **metrics,
        # The training objective's own terms (ESS, beta-TCVAE's MI / TC / dimension-wise KL).
        **run.objective_terms(state, images, labels),
    }
    path = workdir / output
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **result}, indent=2))
    if pictures and run.bind_fn is not None:  # pictures need the layer-spec model's decoder
        vae_pictures.write_pictures(
            run,
            state,
            workdir / 'images',
            posterior_means=per_example['posterior_mean'],
            labels=labels,
            metrics_path=workdir / run_files.METRICS_FILE,
        )
    return result


def format_table(result: dict[str, Any]) -> str:
    """The scalar metrics as a two-column text table."""
    rows = [
        (name, result[name])
        for name in (
            'nll',
            'bits_per_dim',
            *(f'iwae_k{k}' for k in result['k_list']),
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
    flags.DEFINE_string('output', 'eval.json', 'File in --workdir to write the results to.')
    flags.DEFINE_bool('pictures', True, 'Write pictures into <workdir>/images.')
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
    )
    print(format_table(result))
    print(f'wrote {Path(FLAGS.workdir) / FLAGS.output}')


if __name__ == '__main__':
    define_flags()
    app.run(main)
