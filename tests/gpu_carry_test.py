"""scripts/gpu_carry.py: the wheels it would carry are the installed versions, and enough."""

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from absl.testing import absltest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location('gpu_carry', REPO / 'scripts' / 'gpu_carry.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['gpu_carry'] = module
    spec.loader.exec_module(module)
    return module


gpu_carry = _load_script()


class CarryListTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.packages = gpu_carry.carry_list()
        self.names = {canonicalize_name(n) for n, _ in self.packages}

    def test_every_entry_is_the_installed_version(self):
        for name, version in self.packages:
            self.assertEqual(version, importlib.metadata.version(name), name)

    def test_carries_what_the_device_lacks_and_nothing_it_has(self):
        for root in gpu_carry.ROOTS:
            self.assertIn(canonicalize_name(root), self.names)
        self.assertEmpty(self.names & gpu_carry.DEVICE_HAS)
        # The device's CUDA jax and its numpy must never be shadowed by a carried copy.
        self.assertEmpty(self.names & {'jax', 'jaxlib', 'numpy', 'torch'})

    def test_closed_under_dependencies(self):
        # Every unconditional requirement of a carried package is carried or on the device,
        # and the installed version satisfies its specifier.
        carried = dict((canonicalize_name(n), v) for n, v in self.packages)
        env = {'python_version': gpu_carry.DEVICE_PYTHON, 'extra': ''}
        for name, _ in self.packages:
            for text in importlib.metadata.requires(name) or []:
                req = Requirement(text)
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                dep = canonicalize_name(req.name)
                self.assertTrue(
                    dep in carried or dep in gpu_carry.DEVICE_HAS, f'{name} needs {req.name}'
                )
                if dep in carried:
                    self.assertIn(carried[dep], req.specifier, f'{name} needs {req}')

    def test_download_command_pins_exact_versions_for_the_device(self):
        cmd = gpu_carry.download_command(self.packages, Path('/tmp/wheels'))
        self.assertIn('--no-deps', cmd)
        self.assertEqual(cmd[cmd.index('--python-version') + 1], gpu_carry.DEVICE_PYTHON)
        for name, version in self.packages:
            self.assertIn(f'{name}=={version}', cmd)

    def test_missing_root_raises_naming_it(self):
        with self.assertRaisesRegex(ValueError, 'no-such-package-xyz'):
            gpu_carry.carry_list(roots=('no-such-package-xyz',))


if __name__ == '__main__':
    absltest.main()
