"""Images/s of the streamed input pipeline against the on-device one, in one process.

    TFDS_DATA_DIR=/path/to/tfds python -m benchmarks.stream_vs_device --rounds 5 --steps 500

configs/default.py (a dense VAE, batch 64, 100 steps per jitted call) on MNIST's 60,000 train
images, trained through the trainer's chunk calls: 'device' calls `Run.chunk_fn` on the split
held on the device; 'stream' calls `streaming.StreamedChunks` (Grain reads the rows of each
step from TFDS's array_record files, decodes and scales them, a few steps ahead in threads,
then one host -> device copy per call). Each pipeline first runs one untimed round (compilation,
warm-up); then the timed rounds alternate between the two, so machine load falls on both alike.
Medians over rounds. Prints one JSON line; the ratio is stream / device images per second.
`--npz PATH` trains on an uncompressed .npz instead (the stream then reads a memory map: no
image decoding).

Measured on a shared 2-core AMD EPYC (XLA:CPU, load average 10-14 from other jobs, so noisy):
MNIST from TFDS, device 8,234 images/s, stream 4,249 (0.52x: each image's PNG is decoded on the
same two cores); the same images as an uncompressed uint8 .npz, device 8,083, stream 9,278
(1.15x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from configs import default
from vae_jax import streaming, trainer


def _config(pipeline: str, args: argparse.Namespace, num_steps: int):
    config = default.get_config()
    if args.npz:
        config.input.dataset, config.input.path = 'npz', args.npz
    else:
        config.input.dataset, config.input.data_dir = 'mnist', args.data_dir
    config.input.pipeline = pipeline
    config.num_train_steps = num_steps
    return config


class _Device:
    def __init__(self, run: trainer.Run):
        self.run, self.state = run, run.create_train_state()
        self.perm_epoch = jax.device_put(jnp.asarray(0, jnp.int32), run.replicated)
        self.perm = jax.device_put(run.permutation_fn(self.perm_epoch), run.replicated)
        self.images, self.labels = run.device_split()  # As the trainer puts it.
        self.beta = jnp.asarray(run.config.beta, jnp.float32)

    def call(self, num_steps: int) -> None:
        run = self.run
        self.state, self.perm, self.perm_epoch, sums = run.chunk_fn(
            self.state, self.perm, self.perm_epoch, self.images, self.labels, run.loop_key,
            run.data_key, self.beta, num_steps=num_steps,
        )  # fmt: skip
        jax.device_get(sums)


class _Stream:
    def __init__(self, run: trainer.Run):
        self.run, self.state = run, run.create_train_state()
        self.chunks = streaming.StreamedChunks(run, 0)
        self.beta = jnp.asarray(run.config.beta, jnp.float32)

    def call(self, num_steps: int) -> None:
        run = self.run
        self.state, _, _, sums = self.chunks(
            self.state, None, None, None, None, run.loop_key, run.data_key, self.beta,
            num_steps=num_steps,
        )  # fmt: skip
        jax.device_get(sums)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data_dir', default=None, help='TFDS data dir (else $TFDS_DATA_DIR)')
    parser.add_argument('--npz', default=None, help='read this uncompressed .npz instead of MNIST')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--steps', type=int, default=500, help='optimizer steps per round')
    args = parser.parse_args()
    total = (args.rounds + 1) * args.steps
    pipelines = {
        'device': _Device(trainer.Run(_config('device', args, total))),
        'stream': _Stream(trainer.Run(_config('stream', args, total))),
    }
    per_call = pipelines['device'].run.config.steps_per_call
    batch = pipelines['device'].run.config.input.batch_size
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_ in range(args.rounds + 1):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            for _ in range(args.steps // per_call):
                pipeline.call(per_call)
            if round_:  # Round 0 compiles and warms up.
                times[name].append(time.perf_counter() - start)
    pipelines['stream'].chunks.reader.close()
    rates = {name: args.steps * batch / statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                'benchmark': 'stream_vs_device',
                'config': f'configs/default.py on {args.npz or "mnist"}',
                'batch_size': batch,
                'steps_per_round': args.steps,
                'rounds': args.rounds,
                'images_per_sec': {k: round(v, 1) for k, v in rates.items()},
                'stream_over_device': round(rates['stream'] / rates['device'], 3),
                'backend': jax.default_backend(),
            }
        )
    )


if __name__ == '__main__':
    main()
