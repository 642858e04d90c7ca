"""Command-line failures: one `error:` line and exit 1 for what the user can fix, tracebacks for
bugs (vae_jax/cli.py, vae_jax/errors.py); where `vae_jax.evaluate` writes its results."""

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import cli, config_validation, errors, evaluate, run_files, trained, trainer

REPO = Path(__file__).resolve().parents[1]


def _cli(module, *args, cwd=REPO):
    """Runs `python -m <module> <args>`; returns (exit status, stderr)."""
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    proc = subprocess.run(
        [sys.executable, '-m', module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stderr


class AnticipatedTest(absltest.TestCase):
    """Which exceptions are the user's to fix (one line) and which are bugs (a traceback)."""

    def _raised(self, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (the exception is what is tested)
            return e
        self.fail('nothing was raised')

    def test_a_check_of_the_library_is_anticipated(self):
        config = test_config.get_config()
        config.beta = -1.0
        error = self._raised(lambda: config_validation.validate(config))
        self.assertIsInstance(error, ValueError)
        self.assertTrue(errors.is_anticipated(error))
        self.assertEqual(
            errors.message(error), 'config.beta=-1.0 is invalid; allowed: a finite number >= 0'
        )

    def test_a_value_error_of_numpy_inside_the_library_is_a_bug(self):
        # The same type, raised by NumPy, not by a raise statement of vae_jax: a traceback.
        error = self._raised(lambda: np.zeros(3).reshape(2))
        self.assertIsInstance(error, ValueError)
        self.assertFalse(errors.is_anticipated(error))
        self.assertFalse(errors.is_anticipated(self._raised(lambda: {}['key'])))

    def test_a_user_error_is_anticipated_wherever_raised(self):
        def raise_it():
            raise errors.UnverifiedCheckpoint('no checksum')

        error = self._raised(raise_it)
        self.assertIsInstance(error, RuntimeError)  # Callers catching RuntimeError still do.
        self.assertTrue(errors.is_anticipated(error))

    def test_a_second_interrupt_is_one_line_and_exit_130(self):
        def main(argv):
            del argv
            raise KeyboardInterrupt('a second signal: stopped at once')

        stderr = io.StringIO()
        with redirect_stderr(stderr), self.assertRaises(SystemExit) as exit_:
            cli._guarded(main)(['prog'])
        self.assertEqual(exit_.exception.code, 130)
        self.assertEqual(stderr.getvalue(), 'error: a second signal: stopped at once\n')


class LibraryLogsTest(parameterized.TestCase):
    """What the command line lets through absl's logger without --verbosity."""

    @parameterized.named_parameters(
        ('own_warning', 'vae_jax/pictures.py', 'WARNING', True),
        (
            'library_warning',
            'site-packages/tensorflow_datasets/core/file_utils.py',
            'WARNING',
            False,
        ),
        ('library_error', 'site-packages/tensorflow_datasets/core/file_utils.py', 'ERROR', True),
        # Orbax's writer threads log the error that the waiting save raises: said once, by us.
        (
            'orbax_thread_error',
            'site-packages/orbax/checkpoint/_src/futures/future.py',
            'ERROR',
            False,
        ),
        (
            'orbax_critical',
            'site-packages/orbax/checkpoint/_src/futures/future.py',
            'CRITICAL',
            True,
        ),
    )
    def test_filter(self, path, level, shown):
        own = errors.OWN_DIRS[0].rsplit('vae_jax', 1)[0]
        pathname = own + path if path.startswith('vae_jax') else '/venv/lib/python3.11/' + path
        record = logging.LogRecord('absl', getattr(logging, level), pathname, 1, 'text', (), None)
        self.assertEqual(cli._LibraryWarnings().filter(record), shown)


class TrainCommandTest(parameterized.TestCase):
    """`python -m vae_jax.train`: each kind of input error is one line naming key and value."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        (cls.root / 'not_a_dir').write_text('a file')
        (cls.root / 'bad.npz').write_bytes(b'not an npz file')
        (cls.root / 'buggy_config.py').write_text(
            'def get_config():\n    return {}["no_such_key"]\n'
        )

    def _train(self, *args, config='configs/test.py'):
        workdir = self.root / 'runs' / self._testMethodName
        return _cli('vae_jax.train', f'--config={config}', f'--workdir={workdir}', *args)

    def _assert_one_line(self, code, err, *parts):
        self.assertEqual(code, 1, err[-3000:])
        self.assertNotIn('Traceback', err)
        lines = err.strip().splitlines()
        self.assertLen(lines, 1, err[-3000:])
        self.assertTrue(lines[0].startswith('error: '), lines[0])
        for part in parts:
            self.assertIn(part, lines[0])

    @parameterized.named_parameters(
        ('misspelt_key', ['--config.betta=4'], ['--config.betta=4', "no key 'betta'", '"beta"']),
        ('unparsable_value', ['--config.beta=abc'], ['--config.beta=abc', "'abc'"]),
        ('invalid_value', ['--config.beta=-1'], ['config.beta=-1.0', 'allowed: a finite']),
        (
            'not_the_protocol',
            ['--config.model.module=collections:OrderedDict'],
            ['OrderedDict is not a Flax Linen or NNX module'],
        ),
    )
    def test_input_error(self, args, parts):
        self._assert_one_line(*self._train(*args), *parts)

    def test_missing_config_file(self):
        code, err = self._train(config='configs/no_such_config.py')
        self._assert_one_line(code, err, '--config=configs/no_such_config.py', 'no such file')

    def test_unwritable_workdir(self):
        workdir = self.root / 'not_a_dir' / 'run'
        code, err = _cli('vae_jax.train', '--config=configs/test.py', f'--workdir={workdir}')
        self._assert_one_line(code, err, f"workdir '{workdir}' cannot be written")

    def test_bad_npz(self):
        npz = self.root / 'bad.npz'
        code, err = self._train('--config.input.dataset=npz', f'--config.input.path={npz}')
        self._assert_one_line(code, err, str(npz))

    def test_traceback_flag_shows_the_traceback(self):
        code, err = self._train('--config.beta=-1', '--traceback')
        self.assertEqual(code, 1)
        self.assertIn('Traceback', err)
        self.assertIn('config.beta=-1.0 is invalid', err)

    def test_a_bug_keeps_its_traceback(self):
        code, err = self._train(config=str(self.root / 'buggy_config.py'))
        self.assertNotEqual(code, 0)
        self.assertIn('Traceback', err)
        self.assertIn("KeyError: 'no_such_key'", err)


class EvaluateCommandTest(absltest.TestCase):
    """`python -m vae_jax.evaluate` on a tiny trained run."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
        cls.pristine = cls.root / 'pristine'
        trainer.train_and_evaluate(test_config.get_config(), cls.pristine)

    def _copy(self):
        workdir = Path(self.create_tempdir().full_path) / 'run'
        shutil.copytree(self.pristine, workdir)
        return workdir

    def _evaluate(self, workdir, *args):
        return _cli('vae_jax.evaluate', f'--workdir={workdir}', *args)

    def test_flags_are_checked_before_loading_in_flag_names(self):
        missing = self.root / 'no_such_run'  # Nothing is read: the flag is reported first.
        for flag, allowed in [
            ('--k_samples=-1', 'an integer >= 0'),
            ('--max_examples=0', 'unset or >= 1'),
        ]:
            code, err = self._evaluate(missing, flag)
            TrainCommandTest._assert_one_line(self, code, err, f'{flag} is invalid', allowed)

    def test_invalid_config_json_names_the_file_and_key(self):
        workdir = self._copy()
        path = workdir / 'config.json'
        stored = json.loads(path.read_text())
        stored['beta'] = -1.0
        path.write_text(json.dumps(stored))
        code, err = self._evaluate(workdir, '--k_samples=2')
        TrainCommandTest._assert_one_line(
            self, code, err, f'{path} is invalid: config.beta=-1.0 is invalid'
        )
        self.assertNotIn('overwrite', err)
        # The trainer says the same, and does not advise --overwrite (which deletes the run).
        with self.assertRaisesRegex(ValueError, rf'{path} is invalid: config\.beta=-1\.0') as e:
            trainer.train_and_evaluate(test_config.get_config(), workdir)
        self.assertNotIn('overwrite', str(e.exception))

    def test_unverified_checkpoint_is_refused_then_restored_with_a_warning(self):
        workdir = self._copy()
        (workdir / 'checkpoints' / '12' / '_CHECKPOINT_METADATA').unlink()
        args = ('--k_samples=2', '--max_examples=8', '--nopictures', '--output=unverified.json')
        code, err = self._evaluate(workdir, *args)
        TrainCommandTest._assert_one_line(
            self, code, err, 'checkpoints/12 has no recorded checksum', '--allow_unverified'
        )
        code, err = self._evaluate(workdir, *args, '--allow_unverified_checkpoints')
        self.assertEqual(code, 0, err[-3000:])
        self.assertIn('restoring it unverified, as asked', err)
        self.assertTrue((workdir / 'unverified.json').is_file())

    def test_deleted_checksum_and_flipped_bytes_are_refused_not_restored(self):
        workdir = self._copy()
        step_dir = workdir / 'checkpoints' / '12'
        (step_dir / '_CHECKPOINT_METADATA').unlink()
        for path in (step_dir / 'default').rglob('*'):
            if path.is_file() and path.parent.name == 'd':  # Array data files.
                path.write_bytes(np.invert(np.frombuffer(path.read_bytes(), np.uint8)).tobytes())
        # Compressed bytes fail to read (damaged); raw ones read, and lack their checksum.
        with self.assertRaisesRegex(
            RuntimeError, r'checkpoints/12 (could not be restored|has no recorded checksum)'
        ):
            trained.load(workdir)

    def test_damaged_checkpoint_is_one_line(self):
        workdir = self._copy()
        for path in (workdir / 'checkpoints' / '12' / 'default').rglob('*'):
            if path.is_file() and path.parent.name == 'd':  # Array data files, cut in half.
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        code, err = self._evaluate(workdir, '--k_samples=2', '--max_examples=8')
        # No Orbax warnings, no "Event loop is closed" of the reads that outlive the failure.
        TrainCommandTest._assert_one_line(
            self, code, err, 'checkpoints/12 could not be restored', 'damaged or incomplete'
        )

    def test_unverified_checkpoint_is_not_moved_aside_as_damaged(self):
        workdir = self._copy()
        step_dir = workdir / 'checkpoints' / '12'
        (step_dir / '_CHECKPOINT_METADATA').unlink()
        with self.assertRaisesRegex(errors.UnverifiedCheckpoint, 'has no recorded checksum'):
            trainer.train_and_evaluate(
                test_config.get_config(), workdir, skip_damaged_checkpoints=True
            )
        self.assertTrue(step_dir.is_dir())
        self.assertFalse((workdir / run_files.DAMAGED_DIR).exists())
        model = trained.load(workdir, allow_unverified_checkpoints=True)
        self.assertEqual(model.step, 12)

    def test_a_less_precise_evaluation_leaves_eval_json_and_images_unchanged(self):
        workdir = self._copy()
        eval_json = workdir / 'eval.json'
        precise = {**json.loads(eval_json.read_text()), 'nll_k': 1000, 'num_examples': 100}
        eval_json.write_text(json.dumps(precise))
        before = eval_json.read_bytes()
        images = {p.name: p.read_bytes() for p in (workdir / 'images').iterdir()}
        code, err = self._evaluate(workdir, '--k_samples=4', '--max_examples=10')
        self.assertEqual(code, 0, err[-3000:])
        self.assertEqual(eval_json.read_bytes(), before)
        self.assertEqual({p.name: p.read_bytes() for p in (workdir / 'images').iterdir()}, images)
        written = json.loads((workdir / 'eval_k4_n10.json').read_text())
        self.assertEqual((written['nll_k'], written['num_examples']), (4, 10))
        self.assertTrue((workdir / 'eval_k4_n10_images' / 'samples.png').is_file())
        self.assertIn('is kept; pass --output eval.json to replace it', err)


class ResultsPathTest(parameterized.TestCase):
    """`evaluate.results_path`: eval.json only for an evaluation at least as precise."""

    @parameterized.named_parameters(
        ('no_eval_json', None, ('test', 5, 10), 'eval.json'),
        ('trainer_eval_json', {'split': 'test', 'num_examples': 10}, ('test', 5, 10), 'eval.json'),
        ('larger_k_and_n', {'nll_k': 5, 'num_examples': 10}, ('test', 50, 20), 'eval.json'),
        ('smaller_k', {'nll_k': 5000, 'num_examples': 10}, ('test', 50, 10), 'eval_k50_n10.json'),
        ('fewer', {'nll_k': 5, 'num_examples': 100}, ('test', 50, 10), 'eval_k50_n10.json'),
        (
            'other_split',
            {'nll_k': 5, 'num_examples': 10},
            ('train', 5, 10),
            'eval_train_k5_n10.json',
        ),
    )
    def test_where(self, old, new, expected):
        workdir = Path(self.create_tempdir().full_path)
        if old is not None:
            (workdir / run_files.EVAL_FILE).write_text(json.dumps(old))
        split, k, n = new
        result = {'split': split, 'nll_k': k, 'num_examples': n, 'seed_from': 'config'}
        path, why = evaluate.results_path(workdir, None, result)
        self.assertEqual(path, workdir / expected)
        self.assertEqual(bool(why), expected != 'eval.json')
        self.assertEqual(
            evaluate.results_path(workdir, 'mine.json', result)[0], workdir / 'mine.json'
        )


if __name__ == '__main__':
    absltest.main()
