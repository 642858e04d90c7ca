"""Times one config's jitted training chunk for loop in {scan, unroll} x steps_per_call.

    nice -n 5 python experiments/configs/loop_timing.py --config configs/fashion_conv_cb.py \
        --steps 1,5,10 --data_dir /path/to/tfds

Prints one JSON line per setting: compile time (first call) and steady-state steps/s (median
over --repeats calls after the first). Uses the first 2,000 training images (the speed does not
depend on how many there are: the data sit on the device and batches are gathered by index).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from vae_jax import trainer

_CONFIG = flags.DEFINE_string('config', None, 'Config file.')
_STEPS = flags.DEFINE_string('steps', '1,5,10', 'steps_per_call values, comma-separated.')
_LOOPS = flags.DEFINE_string('loops', 'scan,unroll', 'loop values, comma-separated.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per setting.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir; default $TFDS_DATA_DIR.')


def _load(path: str):
    spec = importlib.util.spec_from_file_location('cfg', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main(argv):
    del argv
    for loop in _LOOPS.value.split(','):
        for n in (int(s) for s in _STEPS.value.split(',')):
            config = _load(_CONFIG.value)
            config.input.data_dir = _DATA_DIR.value
            config.input.num_train_examples = 2_000
            config.input.num_test_examples = 100
            config.loop = loop
            config.steps_per_call = n
            run = trainer.Run(config)
            state = run.create_train_state()
            images = jax.device_put(run.train_data['image'])
            labels = jax.device_put(run.train_data['label'])
            epoch = jnp.zeros((), jnp.int32)
            perm = run.permutation_fn(epoch)
            beta = jnp.asarray(config.beta, jnp.float32)
            times = []
            for _ in range(_REPEATS.value + 1):
                t0 = time.time()
                state, perm, epoch, sums = run.chunk_fn(
                    state,
                    perm,
                    epoch,
                    images,
                    labels,
                    run.loop_key,
                    run.data_key,
                    beta,
                    num_steps=n,
                )
                jax.block_until_ready(sums)
                times.append(time.time() - t0)
            steady = statistics.median(times[1:])
            print(
                json.dumps(
                    dict(
                        config=_CONFIG.value,
                        loop=loop,
                        steps_per_call=n,
                        compile_and_first_call_s=round(times[0], 2),
                        steps_per_sec=round(n / steady, 2),
                    )
                ),
                flush=True,
            )


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
