#!/usr/bin/env bash
# Sweep the KL weight beta: one run per value under <runs_root>/<name>/<beta>, then a table and
# the rate-distortion plot (scripts/aggregate.py). Options as in scripts/sweep.sh:
#
#   scripts/sweep_beta.sh CONFIG BETA... [--name NAME] [--jobs N] [--evaluate K]
#       [--evaluate_args 'ARGS'] [--runs_root DIR] [-- --config.x=y ...]
#
# Example (runs/default_beta/{0.5,1,2,4}, two at a time, 2,000 steps each):
#   scripts/sweep_beta.sh configs/default.py 0.5 1 2 4 --jobs 2 -- --config.num_train_steps=2000
# To train the models of a beta sweep in one vectorised program instead, see vae_jax/sweep.py.
exec "$(dirname "${BASH_SOURCE[0]}")/sweep.sh" beta "$@"
