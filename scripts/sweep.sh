#!/usr/bin/env bash
# Sweep one config key: one training run per value, then a table and plots of the sweep.
#
#   scripts/sweep.sh KEY CONFIG VALUE... [--name NAME] [--jobs N] [--evaluate K]
#       [--evaluate_args 'ARGS'] [--runs_root DIR] [-- --config.x=y ...]
#
# scripts/sweep_beta.sh and scripts/sweep_k.sh call this with KEY=beta and KEY=k_samples.
#
# Run v goes to <runs_root>/<name>/<v>, with stdout and stderr appended to <run>/train.log:
#   python -m vae_jax.train --config CONFIG --workdir <run> [overrides] --config.KEY=v
#   <runs_root>  --runs_root, else $VAE_RUNS_ROOT, else runs
#   <name>       --name, else <config file stem>_<beta|k>
# A finished run is skipped without starting Python's JAX (its eval.json is at the final step
# and its recorded command line, <run>/command.txt, is the same; edit a config file and the
# check cannot see it: use a new --name). Any other run is started: the trainer resumes an
# interrupted run from its checkpoints, and refuses a run directory of a different config.
# --jobs N runs N at once. A failing run is reported with its log and does not stop the others.
# --evaluate K then runs `python -m vae_jax.evaluate --workdir <run> --k_samples K [ARGS]`
# (test NLL with K importance samples) unless eval.json already holds an NLL with that K.
# At the end `scripts/aggregate.py <runs_root>/<name>` writes summary.md, summary.csv and plots.
# Exit status: 0 when every run (and evaluation) succeeded, 1 when some failed, 2 on bad usage.
# Environment: PYTHON (default .venv/bin/python of this repository, else python3).

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
KEY="$1"
shift
case "$KEY" in
  beta) SHORT=beta ;;
  k_samples) SHORT=k ;;
  -h | --help) usage ;;
  *) SHORT="$KEY" ;;
esac

NAME=""
JOBS=1
EVALUATE=""
EVALUATE_ARGS=""
RUNS_ROOT="${VAE_RUNS_ROOT:-runs}"
POSITIONAL=()
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --name=*) NAME="${1#*=}"; shift ;;
    --jobs) JOBS="${2:?--jobs needs a value}"; shift 2 ;;
    --jobs=*) JOBS="${1#*=}"; shift ;;
    --evaluate) EVALUATE="${2:?--evaluate needs a value}"; shift 2 ;;
    --evaluate=*) EVALUATE="${1#*=}"; shift ;;
    --evaluate_args) EVALUATE_ARGS="${2?--evaluate_args needs a value}"; shift 2 ;;
    --evaluate_args=*) EVALUATE_ARGS="${1#*=}"; shift ;;
    --runs_root) RUNS_ROOT="${2:?--runs_root needs a value}"; shift 2 ;;
    --runs_root=*) RUNS_ROOT="${1#*=}"; shift ;;
    -h | --help) usage ;;
    --) shift; OVERRIDES=("$@"); break ;;
    -[0-9]* | -.[0-9]*) POSITIONAL+=("$1"); shift ;;  # a negative value, not an option
    -*) echo "sweep: unknown option $1 (config overrides go after --)" >&2; exit 2 ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done

[[ ${#POSITIONAL[@]} -ge 2 ]] || { echo "sweep: need CONFIG and at least one value" >&2; usage; }
CONFIG="${POSITIONAL[0]}"
VALUES=("${POSITIONAL[@]:1}")
[[ -f "${CONFIG%%:*}" ]] || { echo "sweep: config file ${CONFIG%%:*} not found" >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "sweep: --jobs must be a positive integer" >&2; exit 2; }
[[ -z "$EVALUATE" || "$EVALUATE" =~ ^[0-9]+$ ]] || {
  echo "sweep: --evaluate must be a number of importance samples" >&2; exit 2; }
for v in "${VALUES[@]}"; do
  [[ "$v" =~ ^[A-Za-z0-9._+-]+$ ]] || { echo "sweep: value '$v' is not a plain number" >&2; exit 2; }
done
if [[ -n "$(printf '%s\n' "${VALUES[@]}" | sort | uniq -d)" ]]; then
  echo "sweep: repeated values: ${VALUES[*]}" >&2
  exit 2
fi

if [[ -z "$NAME" ]]; then
  stem="$(basename "${CONFIG%%:*}")"
  NAME="${stem%.py}_${SHORT}"
fi
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
# configs/*.py import `configs.default`: make the repository importable from any directory.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

SWEEP_DIR="$RUNS_ROOT/$NAME"
STATUS_DIR="$SWEEP_DIR/.status"
mkdir -p "$STATUS_DIR" || exit 1
rm -f "$STATUS_DIR"/*

# What was swept, for scripts/aggregate.py (its table always shows the swept key).
"$PYTHON" - "$SWEEP_DIR/sweep.json" "$KEY" "$CONFIG" "${VALUES[@]}" -- "${OVERRIDES[@]}" <<'EOF'
import json, sys
path, key, config, *rest = sys.argv[1:]
split = rest.index('--')
info = {'keys': [key], 'config': config, 'values': rest[:split], 'overrides': rest[split + 1:]}
open(path, 'w').write(json.dumps(info, indent=2) + '\n')
EOF

# True when <run> finished with the same command line: eval.json is at config.json's last step.
finished() {
  local run="$1" cmd="$2"
  [[ -f "$run/eval.json" && -f "$run/config.json" && -f "$run/command.txt" ]] || return 1
  [[ "$(cat "$run/command.txt")" == "$cmd" ]] || return 1
  "$PYTHON" - "$run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
ev = json.loads((run / 'eval.json').read_text())
cfg = json.loads((run / 'config.json').read_text())
sys.exit(0 if ev.get('step') == cfg['num_train_steps'] else 1)
EOF
}

# True when eval.json already holds an NLL estimated with K importance samples.
evaluated() {
  "$PYTHON" - "$1/eval.json" "$2" <<'EOF'
import json, sys
ev = json.loads(open(sys.argv[1]).read())
sys.exit(0 if ev.get('nll') is not None and ev.get('nll_k') == int(sys.argv[2]) else 1)
EOF
}

run_one() {
  local value="$1"
  local run="$SWEEP_DIR/$value"
  local log="$run/train.log"
  local cmd=(-m vae_jax.train --config "$CONFIG" --workdir "$run" "${OVERRIDES[@]}"
    "--config.$KEY=$value")
  local status=0
  mkdir -p "$run"
  if finished "$run" "${cmd[*]}"; then
    echo "[$KEY=$value] finished before, skipped ($run)"
  else
    echo "[$KEY=$value] training -> $log"
    {
      echo "### $(date '+%F %T') $PYTHON ${cmd[*]}"
      "$PYTHON" "${cmd[@]}"
    } >>"$log" 2>&1
    status=$?
    if [[ $status -eq 0 ]]; then
      printf '%s\n' "${cmd[*]}" >"$run/command.txt"
    fi
  fi
  if [[ $status -eq 0 && -n "$EVALUATE" ]]; then
    if evaluated "$run" "$EVALUATE"; then
      echo "[$KEY=$value] NLL with k=$EVALUATE already in $run/eval.json"
    elif ! "$PYTHON" -c 'import vae_jax.evaluate' >/dev/null 2>&1; then
      echo "[$KEY=$value] --evaluate: vae_jax.evaluate cannot be imported" | tee -a "$log"
      status=3
    else
      echo "[$KEY=$value] evaluating (k=$EVALUATE) -> $log"
      # shellcheck disable=SC2086  # EVALUATE_ARGS is split into words on purpose.
      {
        echo "### $(date '+%F %T') $PYTHON -m vae_jax.evaluate --workdir $run --k_samples $EVALUATE $EVALUATE_ARGS"
        "$PYTHON" -m vae_jax.evaluate --workdir "$run" --k_samples "$EVALUATE" $EVALUATE_ARGS
      } >>"$log" 2>&1
      status=$?
    fi
  fi
  echo "$status" >"$STATUS_DIR/$value"
  if [[ $status -eq 0 ]]; then
    echo "[$KEY=$value] ok"
  else
    echo "[$KEY=$value] FAILED (exit $status); log: $log" >&2
    tail -n 5 "$log" | sed "s/^/[$KEY=$value]   /" >&2
  fi
  return 0
}

# Ctrl-C reaches the trainers too (same process group); they save a checkpoint and stop.
trap 'echo "sweep: interrupted; waiting for running jobs to save their checkpoints" >&2; wait; exit 130' INT

echo "sweep $NAME: $KEY in {${VALUES[*]}}, config $CONFIG, ${#VALUES[@]} runs, $JOBS at a time -> $SWEEP_DIR"
for value in "${VALUES[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do
    wait -n
  done
  run_one "$value" &
done
wait

failed=()
for value in "${VALUES[@]}"; do
  status="$(cat "$STATUS_DIR/$value" 2>/dev/null || echo missing)"
  [[ "$status" == 0 ]] || failed+=("$value")
done
rm -rf "$STATUS_DIR"

"$PYTHON" "$REPO/scripts/aggregate.py" "$SWEEP_DIR"
aggregate_status=$?

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "sweep $NAME: ${#failed[@]} of ${#VALUES[@]} runs FAILED: $KEY in {${failed[*]}}" >&2
  for value in "${failed[@]}"; do echo "  $SWEEP_DIR/$value/train.log" >&2; done
  exit 1
fi
echo "sweep $NAME: all ${#VALUES[@]} runs finished"
exit "$aggregate_status"
