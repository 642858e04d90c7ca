"""Test-wide JAX settings: CPU only, loud broadcasting, fast compiles, one compilation cache.

The settings that change compiled programs are set as environment variables, so the runs that
tests start in subprocesses (the command line, the multi-process runs, the notebook's kernel)
compile exactly like the tests themselves. The persistent compilation cache lives in a
temporary directory made for this pytest session and removed at its end: the suite's many
runs compile the same few programs, and a cache hit returns the executable compiled from the
same program (results unchanged). It is never reused across sessions, so an executable built for
one CPU is never loaded on another.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    # The pytest process (the xdist controller when -n is given) makes it; xdist workers and
    # subprocesses inherit the variable, so they share one cache.
    _cache_dir = tempfile.mkdtemp(prefix='vae_jax_test_compile_cache_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_disable_most_optimizations', True)  # also set above, for subprocesses

from absl import flags  # noqa: E402

# absltest helpers such as create_tempdir read absl flags; pytest does not parse them.
flags.FLAGS.mark_as_parsed()

from absl.testing import absltest  # noqa: E402

# Class- and module-level fixtures make temporary directories under absltest's default test
# directory, which absltest creates only on a test's first create_tempdir: a test file run alone
# (or first on a pytest-xdist worker) would otherwise fail in setUpClass.
os.makedirs(absltest.get_default_test_tmpdir(), exist_ok=True)
