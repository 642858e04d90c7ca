"""Milliseconds per optimizer step of the Table 1 program: N rows at k samples, one call.

    python experiments/iwae_mnist/step_time.py --config.input.data_dir=/path/to/tfds \
        [--num_rows 1,5,10] [--k 1,5,50] [--steps_per_call 1000] [--repeats 3] [--out FILE]

For each (N, k) it builds the program `table1.py` runs (`vae_jax/k_sweep.py`: N IWAE-k rows with
seeds 0..N-1 on the config's network; N = 1 is the plain single-run call), compiles one call of
`--steps_per_call` steps, then times `--repeats` calls and prints one JSON line per (N, k):
{'num_rows', 'k', 'ms_per_step' (fastest call / steps), 'ms_per_step_median', 'compile_s',
'backend', 'device'}. A program whose ms_per_step barely grows with N (or with k) is
launch-bound: its N rows cost about what one costs. No run directory is written.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vae_jax import k_sweep, steps  # noqa: E402
from vae_jax import run as run_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(REPO / 'configs' / 'iwae_mnist.py'), 'Experiment config (one network).'
)
_NUM_ROWS = flags.DEFINE_list('num_rows', ['1', '5', '10'], 'Rows per program.')
_K = flags.DEFINE_list('k', ['1', '5', '50'], 'Samples per example of every row.')
_STEPS = flags.DEFINE_integer('steps_per_call', 1000, 'Optimizer steps per timed call.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per (N, k) after the compiling one.')
_OUT = flags.DEFINE_string('out', None, 'Also append the JSON lines to this file.')


def time_program(config, num_rows: int, k: int, num_steps: int, repeats: int) -> dict:
    """Times one (N, k) program; see the module docstring for the returned fields."""
    configs = {}
    for seed in range(num_rows):
        c = copy.deepcopy(config)
        c.objective, c.k_samples, c.seed = 'iwae', k, seed
        configs[f'seed{seed}'] = c
    runs = list(k_sweep.row_runs(configs).values())
    base = runs[0]
    images, labels = base.device_split()  # As the trainer puts it.
    epoch = jnp.zeros((), jnp.int32)
    betas = jnp.ones((num_rows,), jnp.float32)
    if num_rows == 1:
        fn, state = base.chunk_fn, base.create_train_state()
        loop_keys, data_keys, betas = base.loop_key, base.data_key, betas[0]
        perm = base.permutation_fn(epoch)
    else:
        fn = k_sweep.make_chunk_fn(runs)
        state = jax.device_put(run_lib.stack_states([r.create_train_state() for r in runs]))
        loop_keys = jnp.stack([r.loop_key for r in runs])
        data_keys = jnp.stack([r.data_key for r in runs])
        perm = jax.vmap(steps.epoch_permutation, in_axes=(0, None, None))(
            data_keys, epoch, images.shape[0]
        )
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        state, perm, epoch, sums = fn(
            state, perm, epoch, images, labels, loop_keys, data_keys, betas, num_steps=num_steps
        )
        jax.block_until_ready(sums)
        times.append(time.perf_counter() - t0)
    compile_s, timed = times[0], times[1:]
    return {
        'num_rows': num_rows,
        'k': k,
        'steps_per_call': num_steps,
        'ms_per_step': 1e3 * min(timed) / num_steps,
        'ms_per_step_median': 1e3 * statistics.median(timed) / num_steps,
        'compile_s': compile_s,
        'backend': jax.default_backend(),
        'device': str(jax.devices()[0].device_kind),
    }


def main(argv: list[str]) -> None:
    del argv
    for k in (int(v) for v in _K.value):
        for num_rows in (int(v) for v in _NUM_ROWS.value):
            line = json.dumps(
                time_program(_CONFIG.value, num_rows, k, _STEPS.value, _REPEATS.value)
            )
            print(line, flush=True)
            if _OUT.value:
                with open(_OUT.value, 'a') as f:
                    f.write(line + '\n')


if __name__ == '__main__':
    app.run(main)
