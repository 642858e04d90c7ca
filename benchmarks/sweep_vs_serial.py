"""Wall time of a vectorised sweep (vae_jax/sweep.py) against the same N runs one after another.

Trains N models that differ in beta (a) one after another with `trainer.train_and_evaluate`,
each building its own Run (data, compile) as separate runs do, and (b) as one vectorised program
with `sweep.train_and_evaluate` (parameters stacked, one vmapped jitted chunk). Both in this
process, so Python and JAX start-up, which separate processes would pay N times, is not counted
for the serial runs. The two are interleaved over `--repeats` so machine load affects both alike.
Evaluation is trimmed (eval_k_samples=(1,), `--num_eval_examples` test examples) to keep the
comparison about training.

Run:  python benchmarks/sweep_vs_serial.py [--config configs/mnist_dense_sweep.py]
          [--betas 0.5,1,2,4] [--num_train_steps 600] [--data_dir /path/to/tfds]
Prints one JSON object: per repeat, the end-to-end wall time of each way (seconds) and the
training throughput in model-steps per second (compilation excluded, from eval.json), and their
medians and ratios (serial / vectorised: > 1 means the vectorised sweep is faster).
"""

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

from vae_jax import sweep, trainer

REPO = Path(__file__).resolve().parents[1]


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location('bench_config', REPO / path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO))
    spec.loader.exec_module(module)
    return module.get_config()


def _config(args):
    config = _load_config(args.config)
    config.num_train_steps = args.num_train_steps
    config.log_every_steps = args.num_train_steps
    config.eval_every_steps = args.num_train_steps
    config.checkpoint_every_steps = args.num_train_steps
    config.eval_k_samples = (1,)
    config.num_eval_examples = args.num_eval_examples
    if args.data_dir:
        config.input.data_dir = str((REPO / args.data_dir).resolve())
    return config


def _serial(args, betas, root: Path) -> tuple[float, float]:
    """(wall seconds, model-steps/s while training) of N separate runs one after another."""
    start = time.time()
    rates = []
    for beta in betas:
        config = _config(args)
        config.beta = beta
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars
            result = trainer.train_and_evaluate(config, root / f'serial_{beta}')
        rates.append(result['train_steps_per_sec'])
    wall = time.time() - start
    # Equal steps per run, one model at a time: the harmonic mean of the runs' speeds.
    return wall, statistics.harmonic_mean(rates)


def _vectorised(args, betas, root: Path) -> tuple[float, float]:
    start = time.time()
    config = _config(args)
    config.sweep.beta = ','.join(str(b) for b in betas)
    with contextlib.redirect_stderr(io.StringIO()):
        results = sweep.train_and_evaluate(config, root / 'vectorised')
    wall = time.time() - start
    rate = next(iter(results.values()))['train_steps_per_sec']
    return wall, len(betas) * rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='configs/mnist_dense_sweep.py')
    parser.add_argument('--betas', default='0.5,1,2,4')
    parser.add_argument('--num_train_steps', type=int, default=600)
    parser.add_argument('--num_eval_examples', type=int, default=1000)
    parser.add_argument('--data_dir', default=None, help='TFDS data dir; default $TFDS_DATA_DIR')
    parser.add_argument('--repeats', type=int, default=1)
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(',')]

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            root = Path(tmp) / str(repeat)
            # Alternate the order so that neither way always runs first.
            order = ('serial', 'vectorised') if repeat % 2 == 0 else ('vectorised', 'serial')
            row = {}
            with contextlib.redirect_stdout(io.StringIO()):
                for way in order:
                    fn = _serial if way == 'serial' else _vectorised
                    wall, rate = fn(args, betas, root)
                    row[way] = {'wall_sec': round(wall, 2), 'model_steps_per_sec': round(rate, 1)}
            runs.append(row)

    def median(way, key):
        return statistics.median(r[way][key] for r in runs)

    out = {
        'benchmark': 'sweep_vs_serial',
        'config': args.config,
        'num_models': len(betas),
        'betas': betas,
        'num_train_steps': args.num_train_steps,
        'num_eval_examples': args.num_eval_examples,
        'repeats': runs,
        'median_wall_sec': {w: median(w, 'wall_sec') for w in ('serial', 'vectorised')},
        'median_model_steps_per_sec': {
            w: median(w, 'model_steps_per_sec') for w in ('serial', 'vectorised')
        },
        'wall_ratio_serial_over_vectorised': round(
            median('serial', 'wall_sec') / median('vectorised', 'wall_sec'), 2
        ),
        'throughput_ratio_vectorised_over_serial': round(
            median('vectorised', 'model_steps_per_sec') / median('serial', 'model_steps_per_sec'),
            2,
        ),
        'device': str(jax.devices()[0]),
        'cpu_count': os.cpu_count(),
        'load_average_1m_at_end': round(os.getloadavg()[0], 2),
        'python': platform.python_version(),
        'jax': jax.__version__,
    }
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
