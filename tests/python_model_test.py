"""A model passed from Python is recorded in its run, and no entry point advises losing the run.

`train_and_evaluate(config, workdir, model=...)` with a model whose class imports by a stable path
records it in config.json (`model.module`, `model.module_kwargs`), so the command lines and
`vae_jax.load` rebuild it; with a class made inside a function it records the class by name,
and every entry point without the model refuses with one message and leaves the run directory
byte-identical. A checkpoint written by another model is reported as such, never as damaged.
The tests directory is importable as top-level modules (pytest puts it on sys.path; the
subprocesses get it through PYTHONPATH), so `python_model_test:SmallVAE` is a stable path.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import own_model_test
import pytest
from absl.testing import absltest

from configs import test as test_config
from vae_jax import build, checkpoints, evaluate, optim, trained, trainer

REPO = Path(__file__).resolve().parents[1]
NOT_REBUILDABLE = 'a model passed from Python, which cannot be rebuilt from the run directory'
# The command lines' config: configs/test.py with these overrides (as `_config()` below).
CLI_CONFIG = ['--config=configs/test.py', '--config.num_train_steps=6']


class SmallVAE(own_model_test.TinyVAE):
    """An importable model of this file: `python_model_test:SmallVAE`."""


def _local_model(latent_dim: int = 2):
    class LocalVAE(own_model_test.TinyVAE):
        """Made inside a function: no stable import path."""

    return LocalVAE(latent_dim=latent_dim)


def _config():
    config = test_config.get_config()
    config.num_train_steps = 6
    return config


def _hashes(workdir: Path) -> dict[str, str]:
    """Every file and directory under `workdir`: its SHA-256 (a directory: 'dir')."""
    return {
        str(path.relative_to(workdir)): (
            'dir' if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        )
        for path in sorted(workdir.rglob('*'))
    }


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO / 'tests'), str(REPO)])}
    env['JAX_PLATFORMS'] = 'cpu'
    return subprocess.run(
        [sys.executable, '-m', module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _builtin_target(config):
    """A fresh train state of the config's built-in VAE (host arrays): another model's structure."""
    parts = build.build(config)
    tx = optim.create_optimizer(config.optim, steps_per_epoch=1, num_train_steps=6)
    return jax.device_get(build.create_train_state(parts, build.root_keys(config.seed)[0], tx))


class ImportableModelTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        trainer.train_and_evaluate(
            _config(), cls.workdir, model=SmallVAE(latent_dim=2), stop_at_step=3
        )

    def test_config_json_records_the_import_path_and_fields(self):
        model = json.loads((self.workdir / 'config.json').read_text())['model']
        self.assertEqual(model['module'], 'python_model_test:SmallVAE')
        self.assertEqual(model['module_kwargs'], {'latent_dim': 2, 'hidden': 16})
        self.assertEqual(model['passed_from_python'], build.describe_model(SmallVAE(latent_dim=2)))
        # Rebuilding from the run directory gives an equal module.
        rebuilt = build.build(build.read_config(self.workdir)).model
        self.assertEqual(rebuilt, SmallVAE(latent_dim=2))

    @pytest.mark.slow
    def test_command_line_resume_evaluate_and_load_rebuild_it(self):
        resumed = _cli('vae_jax.train', *CLI_CONFIG, f'--workdir={self.workdir}')
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
        self.assertIn('resuming from checkpoint at step 3', resumed.stdout)
        self.assertEqual(json.loads((self.workdir / 'eval.json').read_text())['step'], 6)
        evaluated = _cli(
            'vae_jax.evaluate',
            f'--workdir={self.workdir}',
            '--k_samples=4',
            '--max_examples=10',
            '--nopictures',
            '--output=cli.json',
        )
        self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
        self.assertIn('step 6', evaluated.stdout)
        loaded = trained.load(self.workdir)
        self.assertEqual(loaded.parts.model, SmallVAE(latent_dim=2))
        self.assertEqual(loaded.step, 6)

    def test_resuming_with_another_model_is_refused_as_such(self):
        before = _hashes(self.workdir)
        with self.assertRaisesRegex(ValueError, 'but model= is') as raised:
            trainer.train_and_evaluate(_config(), self.workdir, model=SmallVAE(latent_dim=3))
        self.assertNotIn('damaged', str(raised.exception))
        self.assertEqual(_hashes(self.workdir), before)

    def test_a_checkpoint_of_another_model_is_not_called_damaged(self):
        before = _hashes(self.workdir)
        target = _builtin_target(_config())
        for skip_damaged in (False, True):
            manager = checkpoints.checkpoint_manager(self.workdir, keep=3)
            try:
                with self.assertRaisesRegex(
                    checkpoints.CheckpointMismatch,
                    'written by another model or train-state structure: params/',
                ) as raised:
                    checkpoints.restore_latest(manager, target, skip_damaged=skip_damaged)
            finally:
                manager.close()
            self.assertNotIn('skip_damaged', str(raised.exception))
            self.assertIn('It is not damaged', str(raised.exception))
        self.assertEqual(_hashes(self.workdir), before)


class NotImportableModelTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        trainer.train_and_evaluate(_config(), cls.workdir, model=_local_model(), stop_at_step=3)

    def test_config_json_names_the_class(self):
        model = json.loads((self.workdir / 'config.json').read_text())['model']
        self.assertIsNone(model['module'])
        self.assertIn('_local_model.<locals>.LocalVAE(', model['passed_from_python'])

    def test_every_entry_point_refuses_and_changes_nothing(self):
        before = _hashes(self.workdir)
        for name, args in (
            ('vae_jax.train', (*CLI_CONFIG, f'--workdir={self.workdir}')),
            (
                'vae_jax.train',
                (*CLI_CONFIG, f'--workdir={self.workdir}', '--skip_damaged_checkpoints'),
            ),
            ('vae_jax.evaluate', (f'--workdir={self.workdir}', '--k_samples=4')),
        ):
            with self.subTest(name=name, args=args):
                out = _cli(name, *args)
                self.assertNotEqual(out.returncode, 0)
                self.assertIn(NOT_REBUILDABLE, out.stderr)
                self.assertIn('LocalVAE', out.stderr)
                self.assertNotIn('--skip_damaged_checkpoints (moves', out.stderr)
                self.assertEqual(_hashes(self.workdir), before)
        for call in (
            lambda: trained.load(self.workdir),
            lambda: evaluate.evaluate(self.workdir, k_samples=4, progress=False),
            lambda: checkpoints.export_params(self.workdir),
            lambda: trainer.train_and_evaluate(_config(), self.workdir),
        ):
            with self.assertRaisesRegex(build.ModelNotRebuildable, NOT_REBUILDABLE):
                call()
            self.assertEqual(_hashes(self.workdir), before)

    def test_passing_the_model_again_loads_and_resumes(self):
        loaded = trained.load(self.workdir, model=_local_model())
        self.assertEqual(loaded.step, 3)  # Nothing else resumes this run.
        with self.assertRaisesRegex(ValueError, 'but model= is'):
            trained.load(self.workdir, model=_local_model(latent_dim=3))
        result = trainer.train_and_evaluate(_config(), self.workdir, model=_local_model())
        self.assertEqual(result['step'], 6)


if __name__ == '__main__':
    absltest.main()
