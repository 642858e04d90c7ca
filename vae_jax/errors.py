"""Which failures are the user's to fix (one message) and which are bugs (a traceback).

The command-line entry points (`vae_jax.cli.run`) end an anticipated failure with one line,
`error: <message>`, and exit status 1; anything else keeps its Python traceback, because it is a
bug to report. A failure is anticipated when

- it is a `UserError` (a marker base class, combined with the builtin type that callers catch,
  e.g. `class UnverifiedCheckpoint(UserError, RuntimeError)`), or
- it is a `ValueError`, `OSError` (`FileNotFoundError`, `PermissionError`, ...) or
  `RuntimeError` raised by a `raise` statement in this package or in `configs/`: the library's
  own checks, whose messages name the key, file or value and what is allowed.

The second rule keeps the exception types that tests and users catch, and needs no change at the
hundred places that raise them. It does not take a `ValueError` that NumPy, JAX or `int('x')`
raises inside library code for a deliberate one: there the innermost frame is not a `raise`
statement of ours.
"""

from __future__ import annotations

import linecache
import os
from pathlib import Path

# Directories whose `raise` statements are the library's own checks.
OWN_DIRS = tuple(
    str(Path(__file__).resolve().parent.parent / name) + os.sep for name in ('vae_jax', 'configs')
)
_ANTICIPATED_TYPES = (ValueError, OSError, RuntimeError)


class UserError(Exception):
    """Base of failures whose message is complete: what failed, where, and what to do."""


class UnverifiedCheckpoint(UserError, RuntimeError):
    """A checkpoint without the checksum recorded when it was saved (so it cannot be checked)."""


def raised_by_library(error: BaseException) -> bool:
    """Whether `error` was raised by a `raise` statement in vae_jax/ or configs/."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.realpath(tb.tb_frame.f_code.co_filename)
    if not filename.startswith(OWN_DIRS):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith('raise')


def is_anticipated(error: BaseException) -> bool:
    """Whether `error` is a failure with a complete message, not a bug (see the module doc)."""
    if isinstance(error, UserError):
        return True
    return isinstance(error, _ANTICIPATED_TYPES) and raised_by_library(error)


def message(error: BaseException) -> str:
    """The text to show for an anticipated failure: its message, else its type's name."""
    return str(error).strip() or type(error).__name__
