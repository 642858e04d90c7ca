#!/usr/bin/env bash
# Trains the dSprites leaderboard's rows (README.md, "Protocol"), then writes the table.
#
#   experiments/disentanglement/run.sh [ROW ...]   # default: every row below
#
# Each (row, seed): `vae_jax.train --config configs/dsprites_<config>.py --config.seed=<seed>`
# into $OUT/<row>/seed<seed>; the trainer writes eval.json with reconstruction, KL and the
# disentanglement metrics (disentanglement/*) at the end, and the traversal picture into
# images/. timing.json records the wall-clock seconds and the command. Runs go seed by seed (all
# rows of seed 0 first), so a partial leaderboard has whole columns. A rerun resumes an
# unfinished run from its last checkpoint and skips a run whose timing.json exists, so the
# leaderboard can be trained over several sittings.
# Run directories are git-ignored while they train. Publish a finished one (it has timing.json)
# by naming its results, never its checkpoints (-f adds whatever it is given):
#   git add -f $d/*.json $d/metrics.jsonl $d/images/{latent_traversals,reconstructions,samples,training_curves}.png
#
# Environment (defaults give the full protocol):
#   OUT=experiments/disentanglement/workdirs   run directories
#   SEEDS="0 1 2"                              seeds of each row
#   JOBS=2                                     runs trained at once (one XLA thread each)
#   STEPS=                                     override num_train_steps (a smoke test)
#   TFDS_DATA_DIR=/path/to/tfds                 only read if a prepared `dsprites` set is there
#   PYTHON=.venv/bin/python
# Smoke test (minutes): STEPS=200 SEEDS=0 OUT=/tmp/dis experiments/disentanglement/run.sh vae
set -euo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-experiments/disentanglement/workdirs}
export STEPS=${STEPS:-}
export PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2}
# The MLP is small: one XLA thread per run, runs side by side on the cores.
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# row -> its config and overrides (the plain VAE is beta-VAE's config at beta = 1).
declare -A CONFIG=(
  [vae]="configs/dsprites_beta_vae.py --config.beta=1"
  [beta_vae]="configs/dsprites_beta_vae.py"
  [annealed_vae]="configs/dsprites_annealed_vae.py"
  [factor_vae]="configs/dsprites_factor_vae.py"
  [dip_vae_i]="configs/dsprites_dip_vae_i.py"
  [dip_vae_ii]="configs/dsprites_dip_vae_ii.py"
  [beta_tcvae]="configs/dsprites_beta_tcvae.py"
)
ALL_ROWS=(vae beta_vae annealed_vae dip_vae_i dip_vae_ii beta_tcvae factor_vae)  # FactorVAE: the dearest, last
rows=("${@:-${ALL_ROWS[@]}}")
for row in "${rows[@]}"; do
  [[ -n ${CONFIG[$row]:-} ]] || { echo "error: unknown row '$row'; rows: ${ALL_ROWS[*]}" >&2; exit 2; }
  config_file=${CONFIG[$row]%% *}
  [[ -f $config_file ]] || { echo "error: row '$row' needs $config_file, which is missing" >&2; exit 2; }
done
export CONFIGS
CONFIGS=$(for row in "${rows[@]}"; do echo "$row=${CONFIG[$row]}"; done)

run_one() {
  local row=$1 seed=$2 workdir=$OUT/$1/seed$2
  [[ -f $workdir/timing.json ]] && { echo "$row seed $seed: done (timing.json exists)"; return 0; }
  local spec
  spec=$(grep "^$row=" <<< "$CONFIGS" | cut -d= -f2-)
  read -r -a config <<< "$spec"
  mkdir -p "$workdir"
  local overrides=(--config.seed="$seed")
  [[ -n $STEPS ]] && overrides+=(--config.num_train_steps="$STEPS")
  local train=("$PYTHON" -m vae_jax.train --config "${config[0]}" "${config[@]:1}"
               --workdir "$workdir" "${overrides[@]}")
  echo "$row seed $seed: training ($workdir/train.log)"
  local t0 t1
  t0=$(date +%s.%N)
  "${train[@]}" >> "$workdir/train.log" 2>&1
  t1=$(date +%s.%N)
  "$PYTHON" - "$workdir/timing.json" "$t0" "$t1" "${train[*]}" <<'PY'
import json, sys
path, t0, t1, train = sys.argv[1:]
json.dump({'train_seconds': float(t1) - float(t0), 'train_command': train}, open(path, 'w'),
          indent=2)
PY
  echo "$row seed $seed: finished"
}
export -f run_one

start=$(date +%s)
status=0
for seed in $SEEDS; do
  for row in "${rows[@]}"; do echo "$row $seed"; done
done | xargs -P "${JOBS:-2}" -L 1 bash -c 'set -euo pipefail; run_one "$@"' _ || status=$?
echo "all runs: $(( $(date +%s) - start )) s wall (exit status $status)"
"$PYTHON" experiments/disentanglement/report.py --workdirs "$OUT" \
  $([[ $OUT == experiments/disentanglement/workdirs ]] && echo --readme)
exit "$status"
