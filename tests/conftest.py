"""Test-wide JAX settings: CPU only, loud broadcasting, fast compiles."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_disable_most_optimizations', True)

from absl import flags  # noqa: E402

# absltest helpers such as create_tempdir read absl flags; pytest does not parse them.
flags.FLAGS.mark_as_parsed()

from absl.testing import absltest  # noqa: E402

# Class- and module-level fixtures make temporary directories under absltest's default test
# directory, which absltest creates only on a test's first create_tempdir: a test file run alone
# (or first on a pytest-xdist worker) would otherwise fail in setUpClass.
os.makedirs(absltest.get_default_test_tmpdir(), exist_ok=True)
