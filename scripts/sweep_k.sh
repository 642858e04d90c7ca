#!/usr/bin/env bash
# Sweep the number of samples k (config.k_samples: IWAE k, or the Monte-Carlo ELBO's k): one run
# per value under <runs_root>/<name>/<k>, then a table and the NLL / bound-against-k plot
# (scripts/aggregate.py). Options as in scripts/sweep.sh:
#
#   scripts/sweep_k.sh CONFIG K... [--name NAME] [--jobs N] [--evaluate K]
#       [--evaluate_args 'ARGS'] [--runs_root DIR] [-- --config.x=y ...]
#
# Example (IWAE, test NLL with 5,000 importance samples after training):
#   scripts/sweep_k.sh configs/iwae_mnist.py 1 5 50 --evaluate 5000 -- \
#       --config.input.data_dir=/path/to/tfds
# k changes array shapes, so unlike beta it cannot be vectorised in one program.
exec "$(dirname "${BASH_SOURCE[0]}")/sweep.sh" k_samples "$@"
