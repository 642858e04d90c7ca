"""Evaluates a 2-D toy run and draws its density picture with a cheaper importance-sampled grid.

    python experiments/configs/toy_density.py --workdir runs/configs/eight_gaussians

`python -m vae_jax.evaluate` draws the model's density with 1,000 importance samples at each of
100 x 100 grid points (10 million decoder calls); on a shared 2-core CPU that takes the better
part of an hour for the 512x3 networks of configs/eight_gaussians*.py. This script runs the same
evaluation (optional test NLL with --nll_k samples, all pictures, eval.json) with --density_k
samples on a --grid x --grid grid instead.
"""

from __future__ import annotations

import argparse

from vae_jax import evaluate


def main() -> None:
    # argparse, not absl flags: vae_jax.evaluate already defines --workdir as an absl flag.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', required=True, help='Run directory of a 2-D toy run.')
    parser.add_argument('--nll_k', type=int, default=0, help='Test NLL samples (0: skip).')
    parser.add_argument('--density_k', type=int, default=100, help='Samples per grid point.')
    parser.add_argument('--grid', type=int, default=60, help='Grid points per axis.')
    args = parser.parse_args()
    evaluate.TOY_DENSITY_K = args.density_k
    evaluate.TOY_GRID = args.grid
    result = evaluate.evaluate(args.workdir, k_samples=args.nll_k, progress=False)
    print(evaluate.format_table(result))


if __name__ == '__main__':
    main()
