"""Scan vs unroll, and steps per jitted call: which compiles each model family's chunk fastest.

Builds one `run.JaxTrainer` per (loop, steps_per_call) setting of a workload, warms each up
(compilation excluded, reported as `first_round_s`), then times interleaved rounds of `--steps`
optimizer steps and reports medians of wall and process CPU seconds (CPU time is less sensitive
to other jobs on a shared machine).

    python -m benchmarks.loop_sweep --workload W1 --settings scan:1,scan:10,scan:100,unroll:10
    python -m benchmarks.loop_sweep --workload W3 --settings unroll:1,unroll:2,unroll:4,scan:4

Prints one JSON object per setting.

Measured 2026-11-21 (one core of the 2-core VM, `taskset -c 1`, other jobs running, so CPU
ms/step): W1 scan:100 4.8, scan:20 5.0, unroll:10 5.6, unroll:20 7.1 (and 4-25 s more
compilation); W3 unroll:1 245, unroll:4 214, unroll:8 217, scan:4 5,882 (XLA:CPU's convolution
gradients inside a while loop). Hence `vae_jax.backends`' CPU entry: dense scan:100, conv unroll:4.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks import run as bench


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workload', default='W1')
    parser.add_argument('--settings', default='scan:1,scan:10,scan:100,unroll:10')
    parser.add_argument('--steps', type=int, default=100, help='steps per timed round')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)

    impls = {}
    for setting in args.settings.split(','):
        loop, steps_per_call = setting.split(':')
        impls[setting] = bench.JaxTrainer(
            args.workload, loop=loop, steps_per_call=int(steps_per_call)
        )
    result = bench.time_rounds(impls, args.steps, args.repeats)
    rows = []
    for setting in impls:
        wall = float(np.median(result['wall_s'][setting]))
        row = {
            'workload': args.workload,
            'setting': setting,
            'steps_per_round': args.steps,
            'ms_per_step': 1e3 * wall / args.steps,
            'cpu_ms_per_step': 1e3 * float(np.median(result['cpu_s'][setting])) / args.steps,
            'images_per_s': args.steps * bench.workloads.BATCH_SIZE / wall,
            'first_round_s': result['warmup_s'][setting],
            'last_loss': result['last_loss'][setting],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == '__main__':
    main()
