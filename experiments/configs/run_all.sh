#!/usr/bin/env bash
# Trains the experiment configs of configs/ as measured in their docstrings, then writes the
# pictures of experiments/configs/README.md. Usage (from anywhere):
#   experiments/configs/run_all.sh [run ...]      default: every run below
# Runs go to runs/configs/<run> (git-ignored), logs to runs/configs/<run>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
# A prepared TFDS data dir (the runs below used ../shared/data/tfds on the authors' machines).
DATA=${TFDS_DATA_DIR:?set TFDS_DATA_DIR to a prepared TFDS data dir (see the README)}
PY=${PYTHON:-.venv/bin/python}

# run name -> "config file stem|extra overrides"
declare -A RUNS=(
  [fashion_conv_gaussian]="fashion_conv_gaussian|"
  [mnist_conv_latent2]="mnist_conv_latent2|"
  [mnist_fullcov]="mnist_fullcov|"
  [mnist_fullcov_mc_kl]="mnist_fullcov|--config.analytic_kl=False --config.kl_samples=10"
  [mnist_autoencoder]="mnist_autoencoder|"
  [mnist_cvae]="mnist_cvae|"
  [fashion_conv_cb]="fashion_conv_cb|--config.num_eval_examples=1000"
  [eight_gaussians]="eight_gaussians|"
  [eight_gaussians_beta1]="eight_gaussians|--config.beta=1"
  [eight_gaussians_iwae]="eight_gaussians_iwae|"
)
ORDER=(fashion_conv_gaussian mnist_conv_latent2 mnist_fullcov mnist_fullcov_mc_kl
       mnist_autoencoder mnist_cvae fashion_conv_cb eight_gaussians eight_gaussians_beta1
       eight_gaussians_iwae)

names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
for name in "${names[@]}"; do
  IFS='|' read -r config extra <<< "${RUNS[$name]}"
  wd=runs/configs/$name
  # shellcheck disable=SC2086
  nice -n 5 "$PY" -m vae_jax.train --config "configs/$config.py" --workdir "$wd" \
      --config.input.data_dir="$DATA" $extra 2>&1 | tr '\r' '\n' | grep -v WARNING \
      > "runs/configs/$name.log"
  case $name in
    mnist_cvae)
      nice -n 5 "$PY" experiments/configs/cvae_digits.py --workdir "$wd" >> "runs/configs/$name.log" 2>&1 ;;
  esac
done
