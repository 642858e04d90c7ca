"""Peak resident memory of training on a large 8-bit image set, beside the data's own size.

Writes an `.npz` of `--num_images` random uint8 images of `--image_size` x `--image_size` x 3
(fixed seed; 100,000 64x64x3 images are 1.23 GB; written once under `--data_dir`, reused while
it has that shape, never committed), then trains `configs/default.py` on it for a few steps in
a child process:

    python -m vae_jax.train --config configs/default.py --workdir <tmp> \
      --config.input.dataset=npz --config.input.path=<file> \
      --config.model.likelihood=continuous_bernoulli --config.num_train_steps=20 \
      --config.num_eval_examples=200 [--config.input.pipeline=stream]

and reports the child's peak resident set size (VmHWM, the figure `/usr/bin/time -v` reports as
"Maximum resident set size", read by the child itself at exit so that the parent's memory,
which holds the generated images while writing them, does not count), the training speed the
run recorded, and the wall time. One JSON object on stdout.

    python -m benchmarks.data_memory                     # on the device (input.pipeline default)
    python -m benchmarks.data_memory --pipeline stream   # streamed (where input.pipeline exists)
    python -m benchmarks.data_memory --repo /path/to/other/checkout --python /path/to/python

`--repo` / `--python` run another checkout's code (e.g. the main branch, for a before/after
table) on the same file; bytecode is not written into that checkout.

Measured (2-core VM with 24 GB, shared with other jobs; 100,000 64x64x3 images, 1.24 GB with
the 1,000 test images; one run each, 2026-12-07):

    code                                    peak RSS   / data   steps/s (20 steps, incl. compile)
    float32 in memory (main before issue 29) 11.27 GB    9.1x    0.25
    8-bit until the step                      3.71 GB    3.0x    0.86

(issue 29 measured 11.1 GB before.) What remains is the uint8 split on the host and its copy on
the device (1.23 GB each) and the process itself; a streamed input pipeline holds neither.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED = 0
NUM_TEST = 1_000
NUM_STEPS = 20
NUM_EVAL_EXAMPLES = 200

# Run in the child: read the process's own peak RSS (VmHWM, fresh at exec) when it exits.
# argv: the file to write the peak to, the module to run, its arguments.
_CHILD = """
import atexit, runpy, sys
def _report(path=sys.argv[1]):
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(path, 'w').write(line.split()[1])  # kB
atexit.register(_report)
module = sys.argv[2]
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def write_images(path: Path, num_images: int, size: int) -> int:
    """Writes the random image set (unless `path` holds one of that shape); returns its bytes."""
    shape = (num_images, size, size, 3)
    if path.is_file() and _shapes(path) == [shape, (NUM_TEST, *shape[1:])]:
        return (num_images + NUM_TEST) * size * size * 3
    rng = np.random.default_rng(SEED)
    train = rng.integers(0, 256, shape, dtype=np.uint8)
    test = rng.integers(0, 256, (NUM_TEST, size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_images=train, test_images=test)
    return train.nbytes + test.nbytes


def _shapes(path: Path) -> list[tuple[int, ...]]:
    """The shapes of train_images and test_images, from the .npy headers (arrays not read)."""
    shapes = []
    with zipfile.ZipFile(path) as archive:
        for key in ('train_images', 'test_images'):
            with archive.open(f'{key}.npy') as f:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shapes.append(tuple(int(d) for d in read(f)[0]))
    return shapes


def train_command(python: str, npz: Path, workdir: Path, pipeline: str | None) -> list[str]:
    """The child's command line: configs/default.py on the image set, NUM_STEPS steps."""
    command = [
        python,
        '-c',
        _CHILD,
        str(workdir / 'vmhwm_kb'),
        'vae_jax.train',
        '--config=configs/default.py',
        f'--workdir={workdir / "run"}',
        '--config.input.dataset=npz',
        f'--config.input.path={npz}',
        '--config.model.likelihood=continuous_bernoulli',
        f'--config.num_train_steps={NUM_STEPS}',
        f'--config.num_eval_examples={NUM_EVAL_EXAMPLES}',
    ]
    if pipeline is not None:
        command.append(f'--config.input.pipeline={pipeline}')
    return command


def measure(args: argparse.Namespace) -> dict:
    npz = Path(args.data_dir) / f'images_{args.num_images}x{args.image_size}.npz'
    data_bytes = write_images(npz, args.num_images, args.image_size)
    with tempfile.TemporaryDirectory(prefix='data_memory_') as tmp:
        workdir = Path(tmp)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
        start = time.perf_counter()
        done = subprocess.run(
            train_command(args.python, npz, workdir, args.pipeline),
            cwd=args.repo,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f'training failed ({done.returncode}):\n{done.stderr[-4000:]}')
        peak = int((workdir / 'vmhwm_kb').read_text()) * 1024
        result = json.loads((workdir / 'run' / 'eval.json').read_text())
        batch_size = json.loads((workdir / 'run' / 'config.json').read_text())['input'][
            'batch_size'
        ]
    rate = result.get('train_steps_per_sec')
    train_bytes = args.num_images * args.image_size**2 * 3
    return {
        'pipeline': args.pipeline or 'default',
        'repo': str(args.repo),
        'num_images': args.num_images,
        'image_shape': [args.image_size, args.image_size, 3],
        'data_gb': round(data_bytes / 1e9, 3),
        'train_split_gb_uint8': round(train_bytes / 1e9, 3),
        'train_split_gb_float32': round(4 * train_bytes / 1e9, 3),
        'peak_rss_gb': round(peak / 1e9, 2),
        'peak_over_data': round(peak / data_bytes, 2),
        'train_steps_per_sec': rate,
        'images_per_sec': None if rate is None else round(rate * batch_size, 1),
        'note': 'speed over 20 steps includes compilation; wall_s includes data loading',
        'wall_s': round(wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num_images', type=int, default=100_000)
    parser.add_argument('--image_size', type=int, default=64)
    parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(), 'vae_jax_bench'))
    parser.add_argument(
        '--pipeline',
        choices=('device', 'stream', 'auto'),
        default=None,
        help='passed as --config.input.pipeline (default: not passed, the config default)',
    )
    parser.add_argument('--repo', default=str(REPO), help='checkout whose code trains')
    parser.add_argument('--python', default=sys.executable, help='interpreter of that checkout')
    print(json.dumps(measure(parser.parse_args(argv))))


if __name__ == '__main__':
    main()
