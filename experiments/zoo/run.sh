#!/usr/bin/env bash
# Trains and evaluates the model zoo on one protocol (configs/zoo.py), then writes the table.
#
#   experiments/zoo/run.sh [MODEL ...]        # default: every model of configs/zoo.py MODELS
#
# Each model: `vae_jax.train --config configs/zoo.py:<model>` into $OUT/<model>, then
# `vae_jax.evaluate --k_samples $NLL_K` (eval.json), and timing.json with the wall-clock seconds
# of both (training includes compilation and the periodic test evaluations). A rerun resumes a
# model from its last checkpoint and skips a model whose timing.json exists.
#
# Environment (defaults give the full protocol):
#   OUT=experiments/zoo/workdirs   run directories
#   JOBS=2                         models trained at once (one XLA thread each)
#   NLL_K=5000                     importance samples of the final NLL
#   MAX_EXAMPLES=                  evaluate the first N test images only (default: all 10,000)
#   STEPS=                         override num_train_steps (a smoke test; logs every STEPS/4)
#   TFDS_DATA_DIR=/path/to/tfds
#   PYTHON=.venv/bin/python
# Smoke test (minutes): STEPS=200 NLL_K=50 MAX_EXAMPLES=100 OUT=/tmp/zoo experiments/zoo/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-experiments/zoo/workdirs}
export NLL_K=${NLL_K:-5000}
export MAX_EXAMPLES=${MAX_EXAMPLES:-}
export STEPS=${STEPS:-}
export DATA_DIR=${TFDS_DATA_DIR:?set TFDS_DATA_DIR to a prepared TFDS data dir}
export PYTHON=${PYTHON:-.venv/bin/python}
# The IWAE-paper model is small: one XLA thread per run, runs side by side on the cores.
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if [[ $# -gt 0 ]]; then
  models=("$@")
else
  read -r -a models <<< "$("$PYTHON" -c 'from configs import zoo; print(*zoo.MODELS)')"
fi

run_one() {
  local model=$1 workdir=$OUT/$1
  [[ -f $workdir/timing.json ]] && { echo "$model: done (timing.json exists)"; return 0; }
  mkdir -p "$workdir"
  local overrides=(--config.input.data_dir="$DATA_DIR")
  if [[ -n $STEPS ]]; then
    local every=$(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))
    overrides+=(--config.num_train_steps="$STEPS" --config.steps_per_call="$every"
                --config.log_every_steps="$every" --config.eval_every_steps="$every"
                --config.checkpoint_every_steps="$STEPS")
  fi
  [[ -n $MAX_EXAMPLES ]] && overrides+=(--config.num_eval_examples="$MAX_EXAMPLES")
  local train=("$PYTHON" -m vae_jax.train --config "configs/zoo.py:$model" --workdir "$workdir"
               "${overrides[@]}")
  local evaluate=("$PYTHON" -m vae_jax.evaluate --workdir "$workdir" --k_samples "$NLL_K"
                  --output eval.json --pictures=false ${MAX_EXAMPLES:+--max_examples "$MAX_EXAMPLES"})
  echo "$model: training ($workdir/train.log)"
  local t0 t1 t2
  t0=$(date +%s.%N)
  "${train[@]}" >> "$workdir/train.log" 2>&1
  t1=$(date +%s.%N)
  echo "$model: evaluating (k=$NLL_K)"
  "${evaluate[@]}" >> "$workdir/train.log" 2>&1
  t2=$(date +%s.%N)
  # The recorded command names the data dir as $TFDS_DATA_DIR, not as this machine's folder.
  local train_line="${train[*]}"
  train_line=${train_line//"$DATA_DIR"/'$TFDS_DATA_DIR'}
  "$PYTHON" - "$workdir/timing.json" "$t0" "$t1" "$t2" "$train_line" "${evaluate[*]}" <<'PY'
import json, sys
path, t0, t1, t2, train, evaluate = sys.argv[1:]
t0, t1, t2 = float(t0), float(t1), float(t2)
json.dump({'train_seconds': t1 - t0, 'eval_seconds': t2 - t1, 'train_command': train,
           'eval_command': evaluate}, open(path, 'w'), indent=2)
PY
  echo "$model: finished"
}
export -f run_one

start=$(date +%s)
status=0
printf '%s\n' "${models[@]}" |
  xargs -P "${JOBS:-2}" -I{} bash -c 'set -euo pipefail; run_one "$@"' _ {} || status=$?
echo "all models: $(( $(date +%s) - start )) s wall (exit status $status)"
"$PYTHON" experiments/zoo/report.py --workdirs "$OUT" \
  $([[ $OUT == experiments/zoo/workdirs ]] && echo --readme)
exit "$status"
