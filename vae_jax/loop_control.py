"""The training loop's control: signals that stop it, its progress line, its measured speed.

`StopSignal` turns SIGINT / SIGTERM into a stop at the end of the current chunk (a second signal
stops at once); `agreed_signal` makes every process stop at the same step; `Progress` is the bar
(or, without a terminal, a line now and then); `Throughput` measures steps/s of the training
calls. Re-exported by `trainer`, which runs the loop.
"""

from __future__ import annotations

import signal
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

# A plain progress line (when stderr is not a terminal) at most this often.
PROGRESS_SECONDS = 30.0


class StoppedBySignal(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int):
        super().__init__(
            f'stopped by signal {signum} ({signal.Signals(signum).name}) at step {step}; '
            'checkpoint saved, rerun the same command to resume'
        )
        self.signum = signum
        self.step = step


class Throughput:
    """Steps per second of the training calls, leaving out each chunk length's first call.

    The first call of a chunk length compiles it, so its time is not training time. A run so
    short that every call compiled (e.g. one call) has only those: its rate then includes the
    compilation, and `includes_compilation` says so.
    """

    def __init__(self):
        self._compiled: set[int] = set()
        self._steps, self._seconds = 0, 0.0
        self._all_steps, self._all_seconds = 0, 0.0

    def record(self, num_steps: int, seconds: float) -> None:
        if num_steps in self._compiled:
            self._steps += num_steps
            self._seconds += seconds
        self._compiled.add(num_steps)
        self._all_steps += num_steps
        self._all_seconds += seconds

    @property
    def includes_compilation(self) -> bool:
        """Whether `steps_per_sec` had to include compiling calls (every call compiled)."""
        return self._seconds <= 0 and self._all_seconds > 0

    @property
    def steps_per_sec(self) -> float | None:
        """Without compiling calls where there are others; None only when nothing ran."""
        if self._seconds > 0:
            return self._steps / self._seconds
        return self._all_steps / self._all_seconds if self._all_seconds > 0 else None


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the chunk and exits."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if self.received is not None:  # A second signal: stop now.
            raise KeyboardInterrupt(
                f'a second signal ({signal.Signals(signum).name}): stopped at once, without '
                'saving; rerun the same command to resume from the newest checkpoint'
            )
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def next_boundary(step: int, config: ml_collections.ConfigDict, stop_at: int | None = None) -> int:
    """The next step at which something happens (log, eval, checkpoint or the end)."""
    out = config.num_train_steps
    for every in (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps):
        out = min(out, (step // every + 1) * every)
    return out if stop_at is None or stop_at <= step else min(out, stop_at)


class Progress:
    """A tqdm bar on process 0 when stderr is a terminal; else a plain line now and then.

    A bar's carriage-return redraws would fill a log file (`2> train.log`), so without a terminal
    process 0 prints one line at most every `PROGRESS_SECONDS`; other processes print nothing.
    """

    def __init__(self, total: int, initial: int, desc: str):
        self.primary = jax.process_index() == 0
        self.bar = tqdm.tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit='step',
            mininterval=1.0,
            disable=not (self.primary and sys.stderr.isatty()),
        )
        self.total, self.desc, self.postfix = total, desc, ''
        self.last_line = time.time()

    def update(self, step: int, num_steps: int, row: dict[str, float] | None, rate: float) -> None:
        self.bar.update(num_steps)
        if row is not None:
            self.postfix = f'loss {row["train/loss"]:.3f}, {rate:.0f} steps/s'
            self.bar.set_postfix(loss=f'{row["train/loss"]:.3f}', steps_per_s=f'{rate:.0f}')
        if self.primary and self.bar.disable and time.time() - self.last_line >= PROGRESS_SECONDS:
            print(
                f'{self.desc}: step {step}/{self.total} {self.postfix}', file=sys.stderr, flush=True
            )
            self.last_line = time.time()

    def close(self) -> None:
        self.bar.close()


def agreed_signal(stop: StopSignal) -> int | None:
    """The stop signal any process has received, or None: all processes stop at one step."""
    if jax.process_count() == 1:
        return stop.received
    received = multihost_utils.process_allgather(np.int32(stop.received or 0))
    return int(np.max(received)) or None
