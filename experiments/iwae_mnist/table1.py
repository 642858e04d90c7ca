"""The IWAE paper's Table 1 rows of one network, trained as one vectorised program.

    python experiments/iwae_mnist/table1.py --config configs/iwae_mnist.py \
        --workdir runs/table1_1layer --config.input.data_dir=/path/to/tfds \
        [--rows elbo_k1,elbo_k5,elbo_k50,iwae_k5,iwae_k50] [--time_limit_sec 540]

trains every row named in `--rows` (`elbo_k<K>`: the paper's VAE with k samples; `iwae_k<K>`:
IWAE-k) with the full protocol of the config (3,280 passes, the paper's schedule) as one program
with a leading row axis (`vae_jax/k_sweep.py`): one jitted call advances all rows, each with its
own objective, k, keys and Adam state, every row drawing the largest k's samples and computing
its own bound from its first k. Row `R` writes `<workdir>/R/` as the separate run
`python -m vae_jax.train --config <config> --config.objective=O --config.k_samples=K
[--config.kl_samples=K]` would (same config.json, metrics.jsonl, checkpoints and eval.json, up to
float rounding), so `vae_jax.load`, `python -m vae_jax.evaluate --workdir <workdir>/R
--k_samples 5000` and `report.py` read it like any run.

VAE rows set `kl_samples = k`: the paper's VAE bound is the mean of the k log-weights, so the
Monte-Carlo KL averages the same k draws as the reconstruction term. (run.sh's separate VAE
runs keep the config's kl_samples = 1: the same expected bound, with the KL from one draw.)
VAE k=1 and IWAE k=1 are one objective; the default rows train it once, as `elbo_k1`.
The two-stochastic-layer rows: `--config configs/iwae_mnist_2layer.py`.

Resume: rerun the same command. `--time_limit_sec` stops the program after that many seconds
(SIGTERM to itself: every row saves a checkpoint at the end of the running call, at most
`steps_per_call` steps later), for sessions whose commands are time-boxed; the next call resumes
every row from there. A finished row is not trained again.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import sys
import threading
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the configs/ package

from vae_jax import k_sweep, trainer  # noqa: E402

ONE_LAYER_ROWS = 'elbo_k1,elbo_k5,elbo_k50,iwae_k5,iwae_k50'
_ROW = re.compile(r'(elbo|iwae)_k([1-9][0-9]*)')

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined only when run as a program (importing this module for its
    functions, as the tests do, must not define a second `--config` beside vae_jax.train's)."""
    config_flags.DEFINE_config_file(
        'config', str(REPO / 'configs' / 'iwae_mnist.py'), 'Experiment config (one network).'
    )
    flags.DEFINE_string('workdir', None, "Parent of the rows' run directories.")
    flags.DEFINE_string('rows', ONE_LAYER_ROWS, 'Comma-separated rows: elbo_k<K>, iwae_k<K>.')
    flags.DEFINE_float(
        'time_limit_sec', None, 'Stop (checkpoints saved) after this many seconds; rerun to resume.'
    )


def row_configs(config, rows: str) -> dict:
    """{row name: the config of that row's separate run} for `rows` ('elbo_k5,iwae_k50').

    Raises:
      ValueError: a malformed or repeated row name.
    """
    names = [r.strip() for r in rows.split(',') if r.strip()]
    out = {}
    for name in names:
        match = _ROW.fullmatch(name)
        if match is None:
            raise ValueError(
                f'--rows: {name!r} is not a row; allowed: elbo_k<K> or iwae_k<K> (K >= 1), '
                f'e.g. {ONE_LAYER_ROWS}'
            )
        if name in out:
            raise ValueError(f'--rows={rows!r} repeats {name!r}; allowed: distinct rows')
        objective, k = match.group(1), int(match.group(2))
        c = copy.deepcopy(config)
        c.objective, c.k_samples = objective, k
        if objective == 'elbo':
            c.kl_samples = k  # the mean of the k log-weights (see the module docstring)
        out[name] = c
    if not out:
        raise ValueError(f'--rows={rows!r} names no row; e.g. {ONE_LAYER_ROWS}')
    return out


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.workdir:
        raise app.UsageError('--workdir is required')
    configs = row_configs(FLAGS.config, FLAGS.rows)
    if FLAGS.time_limit_sec:
        # The trainer handles SIGTERM while it trains (a checkpoint, then StoppedBySignal) and
        # puts this handler back when training is over: a limit reached during the final
        # evaluation then lets it finish instead of killing the process before eval.json.
        signal.signal(signal.SIGTERM, lambda *_: print('time limit reached; finishing'))
        timer = threading.Timer(FLAGS.time_limit_sec, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    try:
        results = k_sweep.train_and_evaluate(configs, FLAGS.workdir)
    except trainer.StoppedBySignal as e:
        print(
            f'{FLAGS.workdir}: {", ".join(configs)} stopped at step {e.step} (time limit or '
            'signal); checkpoints saved, rerun the same command to continue'
        )
        return
    for name, result in results.items():
        print(
            f'{name}: step {result["step"]}, test ELBO {trainer.format_metric(result.get("elbo"))}'
        )


if __name__ == '__main__':
    define_flags()
    app.run(main)
