"""Reliability: kills and signals at any moment, non-finite losses, bad inputs, random configs.

The kill tests run `python -m vae_jax.train` in subprocesses (a small driver adds fault hooks:
SIGKILL inside a checkpoint save, just after one, from outside while the run is busy, SIGTERM
between log steps) and compare the restarted run with an uninterrupted one run in this process:
parameters bit for bit and every metrics row. The module's runs share a persistent compilation
cache (in-process and subprocesses), so most of them do not compile.
"""

import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import hypothesis
import jax
import jax.numpy as jnp
import multiprocess_testing
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl.testing import absltest, parameterized
from hypothesis import strategies as st
from jax.experimental.compilation_cache import compilation_cache

from configs import test as test_config
from vae_jax import (
    checkpoints,
    data,
    distributions,
    input_transform,
    run_files,
    steps,
    trainer,
)

REPO = Path(__file__).resolve().parents[1]
_CACHE = {}


def setUpModule():
    """A persistent compilation cache for this module, in-process and in its subprocesses.

    The same few programs are compiled by many runs here; a cache hit returns the executable
    compiled from the same program, so results are unchanged. Reset when the module ends.
    """
    _CACHE['dir'] = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    _CACHE['min_time'] = jax.config.jax_persistent_cache_min_compile_time_secs
    _CACHE['suite_dir'] = jax.config.jax_compilation_cache_dir  # tests/conftest.py's
    jax.config.update('jax_compilation_cache_dir', _CACHE['dir'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    compilation_cache.reset_cache()


def tearDownModule():
    jax.config.update('jax_compilation_cache_dir', _CACHE['suite_dir'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', _CACHE['min_time'])
    compilation_cache.reset_cache()
    shutil.rmtree(_CACHE['dir'], ignore_errors=True)


# Runs the CLI (`vae_jax.train`) with this test suite's JAX settings and one optional fault.
_DRIVER = (
    multiprocess_testing.PRELUDE
    + r"""
import functools, os, signal, time

jax.config.update('jax_compilation_cache_dir', os.environ['VAE_TEST_CACHE'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
from vae_jax import checkpoints, trainer

fault, _, at = os.environ.get('VAE_TEST_FAULT', '').partition(':')
at = int(at or -1)
if fault == 'kill_in_save':  # Step `at` fully written to its tmp dir; SIGKILL before the rename.
    from orbax.checkpoint._src.path import atomicity

    cls = atomicity.AtomicRenameTemporaryPath
    original_finalize = cls.finalize

    async def finalize(self):
        if self.get_final().name == str(at):
            os.kill(os.getpid(), signal.SIGKILL)
        return await original_finalize(self)

    cls.finalize = finalize
elif fault == 'hang_after_save':  # Step `at` on disk: wait to be SIGKILLed from outside.
    original_save = checkpoints.save

    def _save(manager, step, state):
        original_save(manager, step, state)
        if step == at:
            open(os.environ['VAE_TEST_MARKER'], 'w').close()
            time.sleep(600)

    checkpoints.save = _save
elif fault == 'pause_after_save':  # Step `at` on disk: wait until the file <marker>.go exists.
    original_save = checkpoints.save

    def _save(manager, step, state):
        original_save(manager, step, state)
        if step == at:
            open(os.environ['VAE_TEST_MARKER'], 'w').close()
            while not os.path.exists(os.environ['VAE_TEST_MARKER'] + '.go'):
                time.sleep(0.1)

    checkpoints.save = _save
elif fault == 'sigterm_after_chunk':  # A real SIGTERM once the chunk ending at `at` returns.
    original_chunk_fn = trainer.Run.chunk_fn.func

    def chunk_fn(self):
        fn = original_chunk_fn(self)

        def call(state, *args, num_steps):
            end = int(state.step) + num_steps
            out = fn(state, *args, num_steps=num_steps)
            if end == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        return call

    trainer.Run.chunk_fn = functools.cached_property(chunk_fn)
    trainer.Run.chunk_fn.__set_name__(trainer.Run, 'chunk_fn')
from vae_jax import cli, train

cli.run(train.main)  # As `python -m vae_jax.train`.
"""
)

# 24 steps, 2 per call: chunks end at 2, 3, 5, 6, 8, ...; rows every 3, checkpoints every 6;
# evaluation at the end only (its compile is the slow part of a short run).
_OVERRIDES = {'num_train_steps': 24, 'steps_per_call': 2, 'eval_every_steps': 24}


def _set(config, overrides):
    for key, value in overrides.items():
        *parents, leaf = key.split('.')
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _config(**overrides):
    return _set(test_config.get_config(), {**_OVERRIDES, **overrides})


def _rows(workdir):
    """metrics.jsonl without wall-clock figures."""
    out = []
    for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        row = json.loads(line)
        row.pop('train/steps_per_sec', None)
        out.append(row)
    return out


def _restore(workdir, config):
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state), step


def _step_dirs(workdir):
    return sorted(p.name for p in (Path(workdir) / 'checkpoints').iterdir())


def _class_tempdir(cls):
    """A temporary directory that lives as long as the test class (removed by its cleanup)."""
    path = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


@pytest.mark.slow
class KillAndResumeTest(absltest.TestCase):
    """One workdir, killed four times in four ways, ends where an uninterrupted run ends."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.reference = _class_tempdir(cls)
        trainer.train_and_evaluate(_config(), cls.reference)

    def _start(self, workdir, fault=''):
        flags = [f'--config.{k}={v}' for k, v in _OVERRIDES.items()]
        env = {
            **os.environ,
            'JAX_PLATFORMS': 'cpu',
            'VAE_TEST_CACHE': _CACHE['dir'],
            'VAE_TEST_FAULT': fault,
            'VAE_TEST_MARKER': str(Path(workdir).parent / 'marker'),
        }
        return subprocess.Popen(
            [sys.executable, '-c', _DRIVER, '--config', 'configs/test.py', '--workdir', workdir]
            + flags,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _run(self, workdir, fault=''):
        proc = self._start(workdir, fault)
        out, err = proc.communicate(timeout=600)
        return proc.returncode, out, err

    def test_killed_and_signalled_run_ends_like_an_uninterrupted_one(self):
        workdir = str(Path(self.create_tempdir().full_path) / 'run')

        # 1. SIGKILL inside the save of step 12: its tmp dir is complete but not renamed, and
        # rows 9 and 12 are logged past the last complete checkpoint (6).
        code, _, err = self._run(workdir, 'kill_in_save:12')
        self.assertEqual(code, -signal.SIGKILL, err[-3000:])
        names = _step_dirs(workdir)
        self.assertIn('6', names)
        self.assertNotIn('12', names)
        self.assertTrue(any('orbax-checkpoint-tmp' in n for n in names), names)
        self.assertEqual(_rows(workdir)[-1]['step'], 12)

        # 2. Resumes from 6 (the half-written 12 is never loaded, and is cleaned up); a SIGTERM
        # after the chunk that ends at step 14, between log steps: checkpoint at 14, exit 143.
        code, out, err = self._run(workdir, 'sigterm_after_chunk:14')
        self.assertEqual(code, 128 + signal.SIGTERM, err[-3000:])
        self.assertIn('resuming from checkpoint at step 6', out)
        self.assertIn('stopped by signal 15 (SIGTERM) at step 14', err)
        self.assertEqual(_step_dirs(workdir), ['12', '14', '6'])
        window = json.loads((Path(workdir) / run_files.WINDOW_FILE).read_text())
        self.assertEqual((window['step'], window['window_start']), (14, 12))

        # 3. SIGKILL from outside just after the final checkpoint is on disk, before the final
        # evaluation.
        proc = self._start(workdir, 'hang_after_save:24')
        marker = Path(workdir).parent / 'marker'
        deadline = time.time() + 600
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        proc.kill()
        out, err = proc.communicate(timeout=60)
        self.assertTrue(marker.exists(), err[-3000:])
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        self.assertIn('resuming from checkpoint at step 14', out)
        self.assertIn('24', _step_dirs(workdir))
        self.assertFalse((Path(workdir) / 'eval.json').exists())

        # 4. The last restart only evaluates.
        code, out, err = self._run(workdir)
        self.assertEqual(code, 0, err[-3000:])
        self.assertIn('resuming from checkpoint at step 24', out)
        self.assertEqual(json.loads((Path(workdir) / 'eval.json').read_text())['step'], 24)

        self.assertEqual(_rows(workdir), _rows(self.reference))
        config = _config()
        state, step = _restore(workdir, config)
        expected, expected_step = _restore(self.reference, config)
        self.assertEqual((step, expected_step), (24, 24))
        jax.tree.map(np.testing.assert_array_equal, state.params, expected.params)
        jax.tree.map(np.testing.assert_array_equal, state.opt_state, expected.opt_state)


@pytest.mark.slow
class RunSafetyTest(absltest.TestCase):
    """One writer per workdir, and a failed save that stops cleanly and resumes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.reference = _class_tempdir(cls)
        trainer.train_and_evaluate(_config(), cls.reference)

    _start = KillAndResumeTest._start
    _run = KillAndResumeTest._run

    def _wait_for(self, proc, marker):
        deadline = time.time() + 600
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        self.assertTrue(marker.exists(), 'the first process never reached its pause')

    def test_second_process_is_refused_and_a_killed_holder_leaves_no_lock(self):
        root = Path(self.create_tempdir().full_path)
        workdir, marker = root / 'run', root / 'marker'
        first = self._start(str(workdir), 'pause_after_save:6')
        self._wait_for(first, marker)
        config_before = (workdir / 'config.json').read_text()
        code, _, err = self._run(str(workdir))
        self.assertEqual(code, 1, err[-3000:])
        self.assertIn('is in use by another run', err)
        self.assertIn(f'pid {first.pid},', err)
        self.assertNotIn('Traceback', err)
        self.assertEqual((workdir / 'config.json').read_text(), config_before)
        (root / 'marker.go').touch()
        _, err = first.communicate(timeout=600)
        self.assertEqual(first.returncode, 0, err[-3000:])
        self.assertEqual(_rows(workdir), _rows(self.reference))  # The first run is complete.

        # kill -9 of the holder: the kernel drops its lock; a new start proceeds.
        marker.unlink()
        workdir = root / 'killed'
        holder = self._start(str(workdir), 'hang_after_save:6')
        self._wait_for(holder, marker)
        holder.kill()
        holder.communicate(timeout=60)
        code, out, err = self._run(str(workdir))
        self.assertEqual(code, 0, err[-3000:])
        self.assertIn('resuming from checkpoint at step 6', out)
        self.assertEqual(_rows(workdir), _rows(self.reference))

    def test_failed_save_stops_with_one_message_and_the_same_call_resumes(self):
        workdir = Path(self.create_tempdir().full_path) / 'run'
        config = _config()
        original = ocp.CheckpointManager.save

        def disk_full(manager, step, *args, **kwargs):
            if step == 12:  # What a full disk leaves: a partial step, then the error.
                (Path(manager.directory) / '12.orbax-checkpoint-tmp-1').mkdir()
                raise OSError(errno.ENOSPC, 'No space left on device')
            return original(manager, step, *args, **kwargs)

        with mock.patch.object(ocp.CheckpointManager, 'save', disk_full):
            with self.assertRaisesRegex(
                checkpoints.CheckpointSaveError,
                r'saving the checkpoint of step 12 into \S+/run/checkpoints failed: no space '
                r'left on the device \(ENOSPC\) \(its partial files were removed\)\. Training '
                r'stopped; .*rerun the same command: it resumes from the previous checkpoint, '
                r'step 6$',
            ):
                trainer.train_and_evaluate(config, workdir)
        self.assertEqual(_step_dirs(workdir), ['6'])
        state, step = _restore(workdir, config)
        self.assertEqual(step, 6)
        self.assertEqual([r['step'] for r in _rows(workdir)], [3, 6, 9, 12])
        self.assertEqual(trainer.train_and_evaluate(config, workdir)['step'], 24)
        self.assertEqual(_rows(workdir), _rows(self.reference))
        state, _ = _restore(workdir, config)
        expected, _ = _restore(self.reference, config)
        jax.tree.map(np.testing.assert_array_equal, state.params, expected.params)


class SignalTest(absltest.TestCase):
    def test_a_second_signal_stops_at_once(self):
        with trainer.StopSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            self.assertEqual(stop.received, signal.SIGTERM)
            with self.assertRaises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # The handler runs between bytecodes; it raises before this ends.


@contextlib.contextmanager
def _nonfinite_images(fraction):
    """Makes `fraction` of the training images (at least one) NaN while the context is open."""
    original = data.get_datasets

    def get_datasets(input_config, likelihood=None):
        train, test = original(input_config)
        # As float32 model input (NaN does not fit the stored uint8); the run then holds floats.
        spec = input_transform.spec_from(input_config, train['image'])
        for split in (train, test):
            split['image'] = np.array(input_transform.to_model_input(split['image'], spec))
        count = max(1, int(fraction * len(train['image'])))
        train['image'][np.random.default_rng(0).permutation(len(train['image']))[:count]] = np.nan
        return train, test

    # The support check would (rightly) refuse such data before training.
    with (
        mock.patch.object(data, 'get_datasets', get_datasets),
        mock.patch.object(distributions, 'check_support', lambda *args: None),
    ):
        yield


class NonFiniteTest(absltest.TestCase):
    def test_skip_nonfinite_updates_counts_skips_and_trains_on(self):
        workdir = self.create_tempdir().full_path
        config = _config(skip_nonfinite_updates=True, log_every_steps=6)
        with _nonfinite_images(0.03):
            trainer.train_and_evaluate(config, workdir, stop_at_step=12)
        rows = [r for r in _rows(workdir) if 'train/loss' in r]
        self.assertEqual([r['step'] for r in rows], [6, 12])
        skipped = sum(r['train/skipped'] for r in rows)
        self.assertGreater(skipped, 0)
        self.assertLess(skipped, 12)
        for row in rows:
            self.assertTrue(all(np.isfinite(v) for v in row.values()), row)
        state, _ = _restore(workdir, config)
        self.assertTrue(all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params)))

    def test_train_step_skips_a_nonfinite_update_and_leaves_params_unchanged(self):
        config = _config(skip_nonfinite_updates=True)
        run = trainer.Run(config)
        state = run.create_train_state()
        step = jax.jit(functools.partial(steps.train_step, static=run.static))
        images = input_transform.to_model_input(run.train_data['image'][:16], run.input_spec)
        labels = jnp.asarray(run.train_data['label'][:16])
        beta = jnp.float32(1.0)
        bad, metrics = step(state, images.at[3].set(jnp.nan), labels, run.loop_key, beta)
        self.assertEqual(float(metrics['skipped']), 1.0)
        self.assertEqual(float(metrics['loss']), 0.0)  # Zeroed, so window means stay finite.
        self.assertEqual(int(bad.step), int(state.step) + 1)
        jax.tree.map(np.testing.assert_array_equal, bad.params, state.params)
        jax.tree.map(np.testing.assert_array_equal, bad.opt_state, state.opt_state)
        good, metrics = step(state, images, labels, run.loop_key, beta)
        self.assertEqual(float(metrics['skipped']), 0.0)
        self.assertTrue(np.isfinite(float(metrics['loss'])))
        changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), good.params, state.params)
        self.assertTrue(all(jax.tree.leaves(changed)))

    def test_window_row_averages_applied_updates_and_counts_skips(self):
        row = trainer.window_row({'loss': 6.0, 'skipped': 1.0}, 4)
        self.assertEqual(row, {'train/loss': 2.0, 'train/skipped': 1.0})
        row = trainer.window_row({'loss': 0.0, 'skipped': 3.0}, 3)
        self.assertTrue(np.isnan(row['train/loss']))


class BadInputTest(parameterized.TestCase):
    """Every bad input fails before training, with a message naming the key and the value."""

    @parameterized.named_parameters(
        ('negative_beta', {'beta': -1.0}, r'config\.beta=-1\.0 is invalid; allowed: a finite'),
        ('nan_learning_rate', {'optim.learning_rate': float('nan')}, r'learning_rate=nan.*> 0'),
        (
            'unknown_likelihood',
            {'model.likelihood': 'poisson'},
            r"likelihood='poisson'.*'gaussian'",
        ),
        ('zero_batch_size', {'input.batch_size': 0}, r'input\.batch_size=0.*an integer >= 1'),
        ('bool_as_count', {'k_samples': True}, r'k_samples=True is invalid; allowed: an integer'),
        ('unknown_loop', {'loop': 'while'}, r"config\.loop='while'.*'scan' \| 'unroll'"),
        ('unknown_dataset', {'input.dataset': 'cifar'}, r"input\.dataset='cifar'.*'mnist'"),
        ('estimator_needs_iwae', {'gradient_estimator': 'dreg'}, r"estimator='dreg'.*'reparam'"),
        (
            'free_bits_needs_elbo',
            {'objective': 'iwae', 'free_bits': 0.5},
            r"free_bits=0\.5 applies only when objective='elbo'.*allowed here: 0\.0",
        ),
        (
            'weight_decay_needs_adamw',
            {'optim.weight_decay': 0.1},
            r"optim\.weight_decay=0\.1 applies only when optim\.name='adamw' \(here 'adam'\)",
        ),
        ('momentum_needs_sgd', {'optim.momentum': 0.9}, r'optim\.momentum=0\.9 applies only'),
        (
            'learned_sigma_needs_gaussian',
            {'model.gaussian_sigma': 'learned'},
            r"gaussian_sigma='learned' applies only when model\.likelihood='gaussian'",
        ),
        (
            'checkpoint_cadence',
            {'checkpoint_every_steps': 4},
            r'checkpoint_every_steps=4 must be a multiple of config\.log_every_steps=3',
        ),
        ('empty_eval_k', {'eval_k_samples': ()}, r'eval_k_samples=\(\) is invalid.*non-empty'),
        (
            'conditional_without_labels',
            {'model.use_labels': True, 'input.dataset': 'checkerboard'},
            r"use_labels=True .*needs labels, but config\.input\.dataset='checkerboard' has none",
        ),
        (
            'too_few_classes',
            {'model.use_labels': True, 'model.num_classes': 5},
            r'model\.num_classes=5 is smaller than the 10 classes',
        ),
        ('pad_toy_data', {'input.dataset': 'two_moons', 'input.pad_to_32': True}, r'pad_to_32'),
        (
            'bernoulli_on_grey_images',
            {'model.likelihood': 'bernoulli'},
            r"likelihood='bernoulli' needs data in \{0, 1\}.*data range \[0, 1\]",
        ),
        (
            'continuous_bernoulli_on_toy_data',
            {'input.dataset': 'eight_gaussians', 'input.toy_num_examples': 128},
            r"likelihood='continuous_bernoulli' needs data in \[0, 1\], but the data range",
        ),
        (
            'batch_larger_than_data',
            {'input.num_train_examples': 10},
            r'input\.batch_size=16 is larger than the 10 training examples',
        ),
        (
            'more_examples_than_the_split',
            {'input.num_train_examples': 100_000},
            r'input\.num_train_examples=100000 exceeds',
        ),
        (
            'decoder_does_not_fit_the_data',
            {'model.decoder': 'dense(16)-relu-dense(10)'},
            r'model\.decoder: the body outputs per-example shape \(10,\), but data shape '
            r'\(8, 8, 1\)',
        ),
        (
            'conv_on_toy_data',
            {
                'input.dataset': 'two_moons',
                'input.toy_num_examples': 128,
                'model.likelihood': 'gaussian',
                'model.encoder': 'conv(8,3x3)',
            },
            r"model\.encoder: token 'conv\(8,3x3\)' needs per-example features \[H, W, C\]",
        ),
        ('unknown_layer_token', {'model.encoder': 'dense(16)-swish'}, r"model\.encoder.*'swish'"),
    )
    def test_bad_config_or_data(self, overrides, pattern):
        config = _set(test_config.get_config(), overrides)
        workdir = Path(self.create_tempdir().full_path) / 'run'
        with self.assertRaisesRegex(ValueError, pattern):
            trainer.train_and_evaluate(config, workdir)
        self.assertFalse(workdir.exists())  # Nothing written for a run that cannot start.

    def test_tfds_data_set_not_prepared(self):
        config = _set(test_config.get_config(), {'input.dataset': 'mnist'})
        config.input.data_dir = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, r"'mnist'.*not prepared.*tfds build mnist"):
            trainer.train_and_evaluate(config, self.create_tempdir().full_path)

    def test_workdir_that_cannot_be_written(self):
        blocker = Path(self.create_tempdir().full_path) / 'a_file'
        blocker.write_text('not a directory')
        with self.assertRaisesRegex(
            PermissionError, r"workdir '.*a_file/run' cannot be written .*writable --workdir"
        ):
            trainer.train_and_evaluate(test_config.get_config(), blocker / 'run')

    def test_unset_placeholder_keys_do_not_count_as_a_different_config(self):
        config = test_config.get_config()
        workdir = Path(self.create_tempdir().full_path)
        old = json.loads(config.to_json_best_effort())
        self.assertIsNone(old['optim']['grad_clip_norm'])
        old['optim'].pop('grad_clip_norm')  # Written before that (unset) key existed.
        (workdir / run_files.CONFIG_FILE).write_text(json.dumps(old))
        run_files.prepare_workdir(workdir, config, overwrite=False)
        config.optim.grad_clip_norm = 1.0
        with self.assertRaisesRegex(ValueError, r'optim\.grad_clip_norm: None -> 1\.0'):
            run_files.prepare_workdir(workdir, config, overwrite=False)


# The reason a checkpoint with inverted data bytes is refused: the checksum, or the reader's own
# check where the bytes were in a compressed chunk (zstd detects the corruption first).
_DAMAGED_DATA = (
    r'\(ValueError: (its contents differ from the checksum'
    r'|.*Error reading ".*ZSTD_decompressStream\(\) failed)'
)


def _data_files(step_dir):
    return [p for p in step_dir.rglob('*') if p.is_file() and p.parent.name == 'd']


class FromCheckpointTest(parameterized.TestCase):
    """Copies of a run stopped at step 6 (checkpoints 3 and 6), damaged or resumed."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.config = _config(checkpoint_every_steps=3)
        cls.pristine = _class_tempdir(cls)
        trainer.train_and_evaluate(cls.config, cls.pristine, stop_at_step=6)

    def _copy(self):
        workdir = Path(self.create_tempdir().full_path) / 'run'
        shutil.copytree(self.pristine, workdir)
        return workdir

    @staticmethod
    def _flip_bytes(step_dir):
        # Every byte of every array data file is inverted, so whatever part of a file the
        # restore reads is damaged (a single flipped byte can land in bytes no array uses, and
        # the run then resumes). Which check notices depends on how the bytes were stored: a
        # raw chunk restores and fails the checksum, a zstd-compressed one fails TensorStore's
        # read. Both refuse the same damaged checkpoint (see _DAMAGED_DATA).
        for path in _data_files(step_dir / 'default' / 'ocdbt.process_0'):
            raw = np.frombuffer(path.read_bytes(), np.uint8)
            path.write_bytes(np.invert(raw).tobytes())

    @staticmethod
    def _wrong_checksum(step_dir):
        # Readable data that is not what was saved: only the checksum can tell.
        path = step_dir / '_CHECKPOINT_METADATA'
        meta = json.loads(path.read_text())
        checksum = meta['custom_metadata']['checksum']
        meta['custom_metadata']['checksum'] = checksum[::-1]
        path.write_text(json.dumps(meta))

    @staticmethod
    def _truncate(step_dir):
        for path in _data_files(step_dir):
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    @staticmethod
    def _garbage_metadata(step_dir):
        (step_dir / 'default' / '_METADATA').write_text('{not json')

    @staticmethod
    def _empty(step_dir):
        shutil.rmtree(step_dir)
        step_dir.mkdir()

    @parameterized.named_parameters(
        ('flipped_bytes', '_flip_bytes', _DAMAGED_DATA),
        (
            'wrong_checksum',
            '_wrong_checksum',
            r'\(ValueError: its contents differ from the checksum',
        ),
        ('truncated_file', '_truncate', r'\(\w+: '),
        ('garbage_metadata', '_garbage_metadata', r'\(JSONDecodeError: '),
        ('empty_directory', '_empty', r'\(\w+: '),
    )
    def test_damaged_newest_checkpoint_is_refused_with_directions(self, damage, reason):
        workdir = self._copy()
        getattr(self, damage)(workdir / 'checkpoints' / '6')
        with self.assertRaisesRegex(
            RuntimeError,
            rf'checkpoint .*run/checkpoints/6 could not be restored {reason}.*damaged or '
            r'incomplete.*\. To resume from the previous checkpoint \(step 3\), rerun training '
            r'with --skip_damaged_checkpoints \(moves it to .*run/damaged_checkpoints/6; from '
            r'Python, trainer\.train_and_evaluate\(\.\.\., skip_damaged_checkpoints=True\)\)',
        ):
            trainer.train_and_evaluate(self.config, workdir)
        self.assertTrue((workdir / 'checkpoints' / '6').exists())  # Nothing moved unasked.

    def test_skip_damaged_resumes_from_the_previous_checkpoint(self):
        workdir = self._copy()
        self._flip_bytes(workdir / 'checkpoints' / '6')
        trainer.train_and_evaluate(
            self.config, workdir, stop_at_step=6, skip_damaged_checkpoints=True
        )
        self.assertTrue((workdir / run_files.DAMAGED_DIR / '6').is_dir())
        state, step = _restore(workdir, self.config)  # Step 6 again, recomputed from step 3.
        expected, _ = _restore(self.pristine, self.config)
        self.assertEqual(step, 6)
        jax.tree.map(np.testing.assert_array_equal, state.params, expected.params)
        self.assertEqual(_rows(workdir), _rows(self.pristine))

    def test_leftover_tmp_directory_is_ignored_and_removed(self):
        workdir = self._copy()
        shutil.copytree(
            workdir / 'checkpoints' / '6', workdir / 'checkpoints' / '9.orbax-checkpoint-tmp'
        )
        manager = checkpoints.checkpoint_manager(workdir, 3)
        self.assertEqual(manager.latest_step(), 6)
        deadline = time.time() + 30  # Orbax removes it in the background.
        while len(_step_dirs(workdir)) > 2 and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(_step_dirs(workdir), ['3', '6'])

    def test_sigint_saves_a_checkpoint_at_the_end_of_the_chunk(self):
        workdir = self._copy()
        original = trainer.Run.chunk_fn.func

        def chunk_fn(run):
            fn = original(run)

            def call(state, *args, num_steps):
                end = int(state.step) + num_steps
                out = fn(state, *args, num_steps=num_steps)
                if end == 8:
                    os.kill(os.getpid(), signal.SIGINT)  # Delivered to the trainer's handler.
                return out

            return call

        before = signal.getsignal(signal.SIGINT)
        with mock.patch.object(trainer.Run, 'chunk_fn', property(chunk_fn)):
            with self.assertRaisesRegex(trainer.StoppedBySignal, r'signal 2 \(SIGINT\) at step 8'):
                trainer.train_and_evaluate(self.config, workdir)
        self.assertIs(signal.getsignal(signal.SIGINT), before)  # Restored.
        self.assertEqual(_step_dirs(workdir), ['3', '6', '8'])
        window = json.loads((workdir / run_files.WINDOW_FILE).read_text())
        self.assertEqual((window['step'], window['window_start']), (8, 6))
        self.assertEqual([r['step'] for r in _rows(workdir)], [3, 6])

    def test_nan_loss_stops_with_the_steps_and_metric_and_keeps_the_checkpoint(self):
        workdir = self._copy()
        with _nonfinite_images(1.0):
            with self.assertRaisesRegex(
                RuntimeError,
                r'non-finite train/elbo.*train/loss.* between steps 6 and 9; training stopped\. '
                r'The last good checkpoint is step 6 in .*checkpoints; what was seen is in '
                r'.*nonfinite\.json',
            ):
                trainer.train_and_evaluate(self.config, workdir)
        record = json.loads((workdir / run_files.NONFINITE_FILE).read_text())
        self.assertEqual(record['steps'], [6, 9])
        self.assertIn('train/loss', record['nonfinite'])
        self.assertTrue(np.isnan(record['metrics']['train/loss']))
        self.assertEqual(record['last_checkpoint_step'], 6)
        last = _rows(workdir)[-1]
        self.assertEqual(last['step'], 9)
        self.assertTrue(np.isnan(last['train/loss']))
        self.assertEqual(_step_dirs(workdir), ['3', '6'])
        state, step = _restore(workdir, self.config)  # Still loadable, and finite.
        self.assertEqual(step, 6)
        for leaf in jax.tree.leaves(state.params):
            self.assertTrue(np.isfinite(leaf).all())

    def test_workdir_of_a_different_config_is_refused(self):
        workdir = self._copy()
        config = _set(_config(checkpoint_every_steps=3), {'model.latent_dim': 3})
        with self.assertRaisesRegex(
            ValueError,
            r"workdir '.*run' holds a run of a different config \(differs in: "
            r'model\.latent_dim: 2 -> 3\); use another --workdir, or pass --overwrite',
        ):
            trainer.train_and_evaluate(config, workdir)


class MetricsLogTest(absltest.TestCase):
    def test_resume_keeps_the_rows_its_checkpoint_accounts_for(self):
        workdir = Path(self.create_tempdir().full_path)
        rows = [
            {'step': 3, 'train/loss': 1.0},
            {'step': 6, 'train/loss': 0.5},
            {'step': 6, 'eval/elbo': -1.0},
            {'step': 9, 'train/loss': 0.4},
            {'step': 12, 'train/loss': 0.3},
            {'step': 12, 'eval/elbo': -0.5},  # The final evaluation, written after checkpoint 12.
        ]
        text = ''.join(json.dumps(r) + '\n' for r in rows)
        (workdir / 'metrics.jsonl').write_text(text + '{"step": 15, "train/lo')  # Killed mid-row.
        run_files.MetricsLog(workdir, 12, final_step=12).close()
        self.assertEqual(_rows(workdir), rows[:5])
        run_files.MetricsLog(workdir, 6, final_step=12).close()
        self.assertEqual(_rows(workdir), rows[:3])

    def test_unreadable_line_in_the_middle_is_an_error(self):
        workdir = Path(self.create_tempdir().full_path)
        (workdir / 'metrics.jsonl').write_text('{"step": 3}\nnot json\n{"step": 6}\n')
        with self.assertRaisesRegex(RuntimeError, r'metrics\.jsonl line 2 is not JSON'):
            run_files.MetricsLog(workdir, 6)


@st.composite
def _valid_configs(draw):
    """Random valid configs on digits or a toy 2-D set: objective, k, posterior, likelihood..."""
    config = test_config.get_config()
    config.objective = draw(st.sampled_from(['elbo', 'iwae', 'autoencoder']))
    config.k_samples = draw(st.integers(1, 3))
    if config.objective == 'iwae':
        config.gradient_estimator = draw(st.sampled_from(['reparam', 'stl', 'dreg']))
    if config.objective == 'elbo':
        config.analytic_kl = draw(st.booleans())
    config.beta = draw(st.floats(0.0, 4.0))
    config.loop = draw(st.sampled_from(['scan', 'unroll']))
    config.model.posterior = draw(st.sampled_from(['diagonal', 'full']))
    config.model.latent_dim = draw(st.integers(1, 3))
    toy = draw(st.booleans())
    likelihoods = ['gaussian'] if toy else ['bernoulli', 'continuous_bernoulli', 'gaussian']
    config.model.likelihood = draw(st.sampled_from(likelihoods))
    if config.model.likelihood == 'gaussian':
        config.model.gaussian_sigma = draw(st.sampled_from(['fixed', 'learned', 'per_pixel']))
    if toy:
        config.input.dataset = draw(st.sampled_from(['eight_gaussians', 'two_moons', 'pinwheel']))
        config.input.toy_num_examples = 128
    elif config.model.likelihood == 'bernoulli':
        config.input.binarize = draw(st.sampled_from(['static', 'dynamic']))
    widths = draw(st.lists(st.integers(2, 12), min_size=1, max_size=2))
    activation = draw(st.sampled_from(['relu', 'tanh', 'elu', 'gelu', 'selu', 'softplus']))
    config.model.encoder = '-'.join(f'dense({w})-{activation}' for w in widths)
    config.model.decoder = (
        '-'.join(f'dense({w})-{activation}' for w in widths[::-1]) + '-dense(out)'
    )
    config.steps_per_call = 2
    return config


class RandomConfigTest(absltest.TestCase):
    @hypothesis.settings(max_examples=3, deadline=None)
    @hypothesis.given(_valid_configs())
    def test_a_few_steps_give_finite_metrics(self, config):
        run = trainer.Run(config)
        state = run.create_train_state()
        before = jax.device_get(state.params)
        perm = run.permutation_fn(jnp.int32(0))
        state, _, _, sums = run.chunk_fn(
            state,
            perm,
            jnp.int32(0),
            jnp.asarray(run.train_data['image']),
            jnp.asarray(run.train_data['label']),
            run.loop_key,
            run.data_key,
            jnp.float32(config.beta),
            num_steps=2,
        )
        self.assertEqual(int(state.step), 2)
        for name, value in jax.device_get(sums).items():
            self.assertTrue(np.isfinite(value), f'{name}={value} for {config}')
        after = jax.device_get(state.params)
        for leaf in jax.tree.leaves(after):
            self.assertTrue(np.isfinite(leaf).all())
        moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), after, before)
        self.assertTrue(any(jax.tree.leaves(moved)), 'no parameter changed')


if __name__ == '__main__':
    absltest.main()
