#!/usr/bin/env bash
# The GPU work of the IWAE Table 1 experiment, as short commands for a machine lent for a few
# minutes (written for: 15 minutes of device time a session, at most 10 minutes a command, at
# most 8 files of 16 MiB brought back from $OUT; a bare machine with CUDA jax, flax, optax,
# orbax and torch, no network).
#
# Before, on a machine with this project's environment (see the project README, "On a GPU"):
#   python scripts/gpu_carry.py --data_dir "$TFDS_DATA_DIR"   # .carry/wheels + .carry/tfds (~43 MiB)
# and, to continue rows an earlier session brought back, unpack its table1_rows.tar:
#   mkdir -p .carry/table1 && tar xf table1_rows.tar -C .carry/table1
# Then on the device, from the repository root with .carry/ travelling along, one call each:
#   OUT=... experiments/iwae_mnist/gpu_plan.sh measure   # ~4 min: ms/step, 1/5/10 rows x k=1/5/50
#   OUT=... experiments/iwae_mnist/gpu_plan.sh train     # <= 9 min: the Table 1 rows, then back
#   OUT=... experiments/iwae_mnist/gpu_plan.sh bench     # the GPU benchmark (results_gpu.md)
# MODEL=2layer trains the two-stochastic-layer rows instead; ROWS and TIME_LIMIT (seconds of
# training, default 480) override the defaults.
#
# `train` brings back $OUT/table1_rows.tar (< 16 MiB): every row's run directory with its newest
# checkpoint only (1.6 MB per one-layer row with Adam's state), and $OUT/train.log. Checkpoints
# of rows still training are resume state, not results: keep them in .carry/ (git-ignored),
# never in git; commit a row's config.json / metrics.jsonl / eval.json once it has finished.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder whose files come back}"
mode=${1:?usage: gpu_plan.sh measure|train|bench}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .carry/wheels/*.whl
export PYTHONPATH=/tmp/site TFDS_DATA_DIR=$PWD/.carry/tfds
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" || true

model=${MODEL:-1layer}
case $model in
  1layer) config=configs/iwae_mnist.py ;;
  2layer) config=configs/iwae_mnist_2layer.py ;;
  *) echo "MODEL=$model: allowed 1layer, 2layer" >&2; exit 2 ;;
esac
# VAE k=1 is IWAE k=1: five trainings give the six rows of a network.
rows=${ROWS:-elbo_k1,elbo_k5,elbo_k50,iwae_k5,iwae_k50}

case $mode in
  measure)
    # 9 programs; each compiles once (~10-20 s) and runs 3 timed calls of 500 steps.
    python3 experiments/iwae_mnist/step_time.py --config "$config" \
      --config.input.data_dir="$TFDS_DATA_DIR" --num_rows 1,5,10 --k 1,5,50 \
      --steps_per_call 500 --repeats 3 --out "$OUT/step_time.jsonl" 2> "$OUT/measure.log"
    ;;
  train)
    workdir=.carry/table1/$model
    # table1.py stops itself after TIME_LIMIT seconds with every row checkpointed.
    python3 experiments/iwae_mnist/table1.py --config "$config" --workdir "$workdir" \
      --rows "$rows" --time_limit_sec "${TIME_LIMIT:-480}" \
      --config.input.data_dir="$TFDS_DATA_DIR" > "$OUT/train.log" 2>&1 || status=$?
    # Each row's directory with its newest checkpoint only; no lock, logs or TensorBoard events.
    excludes=(--exclude=run.lock --exclude='events.out.tfevents.*' --exclude='*.log')
    for row_dir in "$workdir"/*/; do
      ckpts="$row_dir/checkpoints"
      [[ -d $ckpts ]] || continue
      newest=$(ls "$ckpts" | grep -E '^[0-9]+$' | sort -n | tail -1)
      for old in $(ls "$ckpts" | grep -E '^[0-9]+$' | grep -vx "$newest"); do
        excludes+=(--exclude="$(basename "$row_dir")/checkpoints/$old")
      done
    done
    tar cf "$OUT/table1_rows.tar" "${excludes[@]}" -C .carry/table1 .
    ls -l "$OUT"
    exit "${status:-0}"
    ;;
  bench)
    python3 -m benchmarks.run --backend gpu --out "$OUT/results_gpu.md" > "$OUT/bench.json" \
      2> "$OUT/bench.log"
    ;;
  *) echo "mode $mode: allowed measure, train, bench" >&2; exit 2 ;;
esac
