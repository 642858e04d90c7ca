"""What every command-line entry point shares: flag parsing, quiet libraries, one-line failures.

    if __name__ == '__main__':
        cli.run(main)

`run` is `absl.app.run` with three differences:

- A failure the library anticipates (`vae_jax.errors.is_anticipated`: a bad config key or
  value, a missing or unreadable file, an unwritable workdir, a damaged checkpoint, a full disk,
  ...) ends with one line on stderr, `error: <message>`, and exit status 1. `--traceback` (or
  `--verbosity=1`) shows the Python traceback too, for a bug report. Anything else is a bug and
  keeps its traceback.
- A flag that cannot be parsed, such as a misspelt config key (`--config.betta=4`) or a config
  file that does not exist, is one such line too, naming the flag.
- Libraries log only errors: Orbax and TFDS log, through absl, every file they touch and
  warnings about states that are normal here or that the program's own message explains; only
  vae_jax's own warnings are shown unless `--verbosity` is given. Likewise the unraisable
  "Event loop is closed" of reads that outlive a failed restore (`_closed_loop_callback`).

An interrupt (Ctrl-C) that the program does not handle itself ends with one line and exit
status 130, the shell's convention.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import errors

_TRACEBACK = flags.DEFINE_bool(
    'traceback',
    False,
    'On a failure the program anticipates (bad config, missing file, damaged checkpoint, ...), '
    'show the Python traceback as well as its one-line message (for bug reports).',
)


class _LibraryWarnings(std_logging.Filter):
    """Drops what libraries log through absl below ERROR, and Orbax's thread errors.

    Libraries report, as warnings, states that are normal here or that the program's own
    message explains (TFDS: "Variant folder ... has no dataset_info.json" before the message
    saying the data set is not prepared). Orbax logs the traceback of each of its writer
    threads that fails (a full disk: three tracebacks, ~110 lines) and raises the same error in
    the save that waits for them, which ends the run with its one line. Records logged by
    vae_jax itself pass.
    """

    def filter(self, record: std_logging.LogRecord) -> bool:
        path = os.path.realpath(record.pathname)
        if path.startswith(errors.OWN_DIRS):
            return True
        floor = std_logging.CRITICAL if f'{os.sep}orbax{os.sep}' in path else std_logging.ERROR
        return record.levelno >= floor


# A failure that is not the user's to fix, raised by flag parsing: exit 1 like absl's own.
_EXIT_FAILURE = 1
_EXIT_INTERRUPTED = 130  # 128 + SIGINT


def fail(text: str) -> None:
    """Ends the program with `error: <text>` on stderr and exit status 1."""
    print(f'error: {text}', file=sys.stderr, flush=True)
    sys.exit(_EXIT_FAILURE)


def show_traceback() -> bool:
    """Whether anticipated failures show their traceback (`--traceback` or `--verbosity>=1`)."""
    verbosity = flags.FLAGS['verbosity']
    return _TRACEBACK.value or (verbosity.present and verbosity.value >= 1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one `error:` line for what absl would show as a traceback.

    ml_collections reports a config key that does not exist as a garbled AttributeError and
    defers a missing config file until the config is first read; both become one line here.
    """
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(f'{e} (--helpfull lists the flags)')
    except AttributeError as e:  # A locked ConfigDict has no such key.
        fail(_unknown_key(e, argv))
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if flag.present and name == flag.name and _is_config_flag(flag):
            _check_config_file(flag)
    return rest


def _is_config_flag(flag: flags.Flag) -> bool:
    try:
        config_flags.get_config_filename(flag)
    except TypeError:  # Not a config file flag.
        return False
    return True


def _unknown_key(error: AttributeError, argv: list[str]) -> str:
    """`--config.betta=4: config has no key 'betta' (did you mean "beta" ...)`."""
    inner = error.args[0] if error.args else error
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    key, _, hint = str(text).partition('\n')
    key = key.strip('\'"')
    overrides = [a for a in argv[1:] if a.startswith('--') and '.' in a.split('=')[0]]
    named = [a for a in overrides if key in a.split('=')[0].split('.')[1:]]
    where = named[0] if named else ' '.join(overrides) or 'a config override'
    allowed = f' ({hint[0].lower()}{hint[1:]})' if hint else ''
    return f'{where}: the config has no key {key!r}{allowed}'


def _check_config_file(flag: flags.Flag) -> None:
    """Reads the config flag's value now, so that a file that failed to load is named here."""
    try:
        flag.value.keys()
    except OSError as e:
        filename = config_flags.get_config_filename(flag)
        path = filename.split(':')[0]
        cause = e.__cause__ or e
        why = 'no such file' if 'No such file' in str(cause) else str(cause).splitlines()[0]
        fail(f'--{flag.name}={filename}: cannot load config file {path!r} ({why})')


def _closed_loop_callback(unraisable: Any) -> bool:
    """An unraisable 'Event loop is closed' from a callback of a read that outlived its loop.

    When a restore fails (a damaged checkpoint), Orbax raises and closes its event loop while
    TensorStore still completes the checkpoint's other reads; each completion's callback then
    finds the loop closed, and Python prints that as an unraisable exception: one traceback per
    read (ten for a small run) before the one line that says the checkpoint is damaged.
    """
    error = unraisable.exc_value
    return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def _drop_closed_loop_callbacks() -> None:
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


def quiet_libraries() -> None:
    """Warnings only from this program, errors from libraries, unless --verbosity is given."""
    if flags.FLAGS['verbosity'].present:
        return
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger('absl').addFilter(_LibraryWarnings())
    _drop_closed_loop_callbacks()
    for name in ('orbax', 'tensorflow_datasets', 'jax'):  # Those that use Python's logging.
        std_logging.getLogger(name).setLevel(std_logging.ERROR)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with one-line anticipated failures (see the module docstring)."""
    app.run(_guarded(main), flags_parser=parse_flags)


def _guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    def guarded(argv: list[str]) -> None:
        quiet_libraries()
        try:
            main(argv)
        except KeyboardInterrupt as e:
            if show_traceback():
                raise
            print(f'error: {e or "interrupted"}', file=sys.stderr, flush=True)
            sys.exit(_EXIT_INTERRUPTED)
        except Exception as e:
            if not errors.is_anticipated(e) or show_traceback():
                raise
            fail(errors.message(e))

    return guarded
