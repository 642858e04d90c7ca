"""Peak resident memory of `python -m vae_jax.evaluate` on a large image set: loaded vs streamed.

Uses the `.npz` of `benchmarks/data_memory.py` (`--num_images` random uint8 images of
`--image_size` x `--image_size` x 3 and its 1,000 test images; written once under `--data_dir`,
reused), trains a run on it for `TRAIN_STEPS` steps (streamed, not measured), then evaluates that
run's checkpoint twice in child processes, once with the run's `input.pipeline` set to 'device'
(the split is loaded whole, as before issue 29's evaluation change) and once to 'stream' (read
batch by batch through `row_sources.StoredRows`):

    python -m vae_jax.evaluate --workdir <run> --split <split> --k_samples <k> \
      --max_examples <n> --batch_size <b> --chunk_size <c> --nopictures --output eval_<p>.json

and reports each child's peak resident set size (VmHWM, read by the child at exit), its wall
time and the NLL it computed (the same number both ways). One JSON object on stdout.

    python -m benchmarks.eval_memory                           # test split (1,000 images)
    python -m benchmarks.eval_memory --split train             # the 100,000-image split

`--split train` stands for a test set as large as the training set: the loaded evaluation holds
the whole split (here 1.23 GB as uint8), the streamed one a batch of it.

Measured (2-core VM with 24 GB, shared with other jobs; 100,000 64x64x3 images; configs/default.py
model after 2 steps, k = 5000, 8 examples, batch 4, chunk 250 (the defaults); one run each,
2026-12-07):

    split evaluated                       loaded (device)   streamed    NLL (both)
    test, 1,000 images (0.012 GB uint8)   1.13 GB, 40 s     1.13 GB, 48 s   158.8416
    train, 100,000 images (1.23 GB)       2.36 GB, 65 s     1.08 GB, 48 s   151.7389

The streamed evaluation's peak is the process itself (JAX, TFDS imports, the compiled
evaluation) whatever the split's size; the loaded one adds the split (for `--split train`,
`data.get_datasets` loads both splits). The NLLs are equal to the last digit (the same program
on the same rows). Wall times include start-up and compilation, on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import data_memory

REPO = data_memory.REPO
TRAIN_STEPS = 2


def _run(command: list[str], cwd: str) -> float:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'{command[4]} failed ({done.returncode}):\n{done.stderr[-4000:]}')
    return time.perf_counter() - start


def _set_pipeline(run_dir: Path, pipeline: str) -> None:
    """The run's config.json with `input.pipeline` set (what vae_jax.evaluate follows)."""
    path = run_dir / 'config.json'
    config = json.loads(path.read_text())
    config['input']['pipeline'] = pipeline
    path.write_text(json.dumps(config, indent=2))


def measure(args: argparse.Namespace) -> dict:
    npz = Path(args.data_dir) / f'images_{args.num_images}x{args.image_size}.npz'
    data_memory.write_images(npz, args.num_images, args.image_size)
    python = sys.executable
    out = {
        'num_images': args.num_images,
        'image_shape': [args.image_size, args.image_size, 3],
        'split': args.split,
        'split_gb_uint8': round(
            (args.num_images if args.split == 'train' else data_memory.NUM_TEST)
            * args.image_size**2
            * 3
            / 1e9,
            3,
        ),
        'k_samples': args.k_samples,
        'max_examples': args.max_examples,
        'batch_size': args.batch_size,
        'chunk_size': args.chunk_size,
    }
    with tempfile.TemporaryDirectory(prefix='eval_memory_') as tmp:
        tmp = Path(tmp)
        train = data_memory.train_command(python, npz, tmp, 'stream')
        train = [a for a in train if not a.startswith('--config.num_train_steps')]
        train.append(f'--config.num_train_steps={TRAIN_STEPS}')
        _run(train, str(REPO))
        run_dir = tmp / 'run'
        for pipeline in ('device', 'stream'):
            _set_pipeline(run_dir, pipeline)
            peak_file = tmp / f'vmhwm_{pipeline}_kb'
            command = [
                python,
                '-c',
                data_memory._CHILD,
                str(peak_file),
                'vae_jax.evaluate',
                f'--workdir={run_dir}',
                f'--split={args.split}',
                f'--k_samples={args.k_samples}',
                f'--max_examples={args.max_examples}',
                f'--batch_size={args.batch_size}',
                f'--chunk_size={args.chunk_size}',
                '--nopictures',
                f'--output=eval_{pipeline}.json',
            ]
            wall = _run(command, str(REPO))
            result = json.loads((run_dir / f'eval_{pipeline}.json').read_text())
            out[pipeline] = {
                'peak_rss_gb': round(int(peak_file.read_text()) * 1024 / 1e9, 2),
                'wall_s': round(wall, 1),
                'nll': result['nll'],
            }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num_images', type=int, default=100_000)
    parser.add_argument('--image_size', type=int, default=64)
    parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(), 'vae_jax_bench'))
    parser.add_argument('--split', choices=('test', 'train'), default='test')
    parser.add_argument('--k_samples', type=int, default=5000)
    parser.add_argument('--max_examples', type=int, default=8)
    parser.add_argument('--batch_size', type=int, default=4)
    parser.add_argument('--chunk_size', type=int, default=250)
    print(json.dumps(measure(parser.parse_args(argv))))


if __name__ == '__main__':
    main()
