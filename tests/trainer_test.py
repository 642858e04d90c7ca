"""End-to-end tests of the training loop on the embedded digits data (configs/test.py)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import eight_gaussians
from configs import test as test_config
from vae_jax import checkpoints, loop_control, run_files, steps, sweep, trainer

REPO = Path(__file__).resolve().parents[1]


def _rows(workdir):
    lines = (Path(workdir) / 'metrics.jsonl').read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _train_rows(workdir):
    """Rows with train/* keys, without wall-clock figures."""
    out = []
    for row in _rows(workdir):
        row = {k: v for k, v in row.items() if k.startswith('train/') or k == 'step'}
        row.pop('train/steps_per_sec', None)
        if len(row) > 1:
            out.append(row)
    return out


def _restore_params(workdir, config):
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params), step


class TrainerTest(parameterized.TestCase):
    def test_run_writes_every_output(self):
        workdir = self.create_tempdir().full_path
        result = trainer.train_and_evaluate(test_config.get_config(), workdir)
        wd = Path(workdir)
        for name in ('config.json', 'metrics.jsonl', 'eval.json'):
            self.assertTrue((wd / name).is_file(), name)
        self.assertTrue(list(wd.glob('events.out.tfevents.*')), 'no TensorBoard event file')
        self.assertTrue((wd / 'images' / 'reconstructions.png').is_file())
        self.assertTrue((wd / 'images' / 'samples.png').is_file())
        self.assertEqual(sorted(int(p.name) for p in (wd / 'checkpoints').iterdir()), [6, 12])
        rows = _train_rows(workdir)
        self.assertEqual([r['step'] for r in rows], [3, 6, 9, 12])
        for row in rows:
            for k in ('train/loss', 'train/recon', 'train/kl', 'train/beta'):
                self.assertTrue(np.isfinite(row[k]), k)
        evals = [r for r in _rows(workdir) if 'eval/elbo' in r]
        self.assertEqual([r['step'] for r in evals], [6, 12])
        self.assertIn('eval/iwae_k4', evals[-1])
        saved = json.loads((wd / 'eval.json').read_text())
        self.assertEqual(saved['step'], 12)
        self.assertAlmostEqual(saved['elbo'], result['elbo'], places=5)
        self.assertEqual(saved['num_examples'], 100)
        # The unweighted ELBO is a lower bound on the log-likelihood estimates.
        self.assertLessEqual(saved['elbo'], saved['iwae_k4'] + 1e-3)

    def test_single_run_and_sweep_of_one_are_the_same_loop(self):
        config = test_config.get_config()
        single = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, single)
        swept = self.create_tempdir().full_path
        sweep_config = test_config.get_config()
        sweep_config.sweep.seed = str(config.seed)
        results = sweep.train_and_evaluate(sweep_config, swept)
        self.assertEqual(list(results), [f'beta=1,seed={config.seed}'])
        model_dir = Path(swept) / f'beta=1,seed={config.seed}'

        def rows(workdir):
            return [
                {k: v for k, v in r.items() if k != 'train/steps_per_sec'} for r in _rows(workdir)
            ]

        self.assertEqual(rows(model_dir), rows(single))
        self.assertEqual(
            (model_dir / 'config.json').read_text(), (Path(single) / 'config.json').read_text()
        )
        params, step = _restore_params(model_dir, config)
        expected, expected_step = _restore_params(single, config)
        self.assertEqual((step, expected_step), (12, 12))
        jax.tree.map(np.testing.assert_array_equal, params, expected)

    def test_pinwheel_run_writes_eval_json_though_a_picture_fails(self):
        # pinwheel has no closed-form density; and a picture that raises must not cost the run.
        config = eight_gaussians.get_config()
        config.input.dataset = 'pinwheel'
        config.input.toy_num_examples = 256
        config.input.batch_size = 64
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.eval_every_steps = 4
        config.checkpoint_every_steps = 4
        config.num_eval_examples = 64
        workdir = Path(self.create_tempdir().full_path)

        def broken(*args, **kwargs):
            raise NotImplementedError('no picture today')

        with mock.patch.object(trainer.vae_pictures.plots, 'latent_scatter', broken):
            result = trainer.train_and_evaluate(config, workdir)
        saved = json.loads((workdir / 'eval.json').read_text())
        self.assertEqual(saved['step'], 4)
        self.assertAlmostEqual(saved['elbo'], result['elbo'], places=5)
        self.assertTrue((workdir / 'images' / 'toy_density.png').is_file())
        self.assertFalse((workdir / 'images' / 'latent_scatter.png').exists())

    def test_changing_only_run_length_and_cadences_resumes(self):
        config = test_config.get_config()
        workdir = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, workdir)
        longer = test_config.get_config()
        longer.num_train_steps = 18
        longer.log_every_steps = 6
        longer.checkpoint_every_steps = 18
        longer.steps_per_call = 3
        longer.input.data_dir = '/somewhere/else'
        result = trainer.train_and_evaluate(longer, workdir)
        self.assertEqual(result['step'], 18)
        stored = json.loads((Path(workdir) / 'config.json').read_text())
        self.assertEqual(stored['num_train_steps'], 18)
        self.assertIsNone(stored['input']['data_dir'])  # Machine-specific: not stored.
        changed = test_config.get_config()
        changed.beta = 2.0
        with self.assertRaisesRegex(ValueError, r'differs in: beta: 1\.0 -> 2\.0\)'):
            trainer.train_and_evaluate(changed, workdir)

    def test_second_lock_on_a_workdir_names_the_holder_and_changes_nothing(self):
        workdir = Path(self.create_tempdir().full_path) / 'run'
        with run_files.WorkdirLock(workdir):
            holder = (workdir / run_files.LOCK_FILE).read_text()
            self.assertIn(f'pid {os.getpid()}', holder)
            with self.assertRaisesRegex(
                run_files.WorkdirLocked,
                rf'in use by another run: host .*, pid {os.getpid()}, since',
            ):
                trainer.train_and_evaluate(test_config.get_config(), workdir)
            self.assertEqual(sorted(p.name for p in workdir.iterdir()), [run_files.LOCK_FILE])
        # Released: the same call now trains.
        self.assertEqual(trainer.train_and_evaluate(test_config.get_config(), workdir)['step'], 12)

    def test_progress_without_a_terminal_is_plain_lines(self):
        with (
            mock.patch.object(loop_control, 'PROGRESS_SECONDS', 0.0),
            mock.patch('sys.stderr', new_callable=io.StringIO) as err,
        ):
            progress = trainer.Progress(10, 0, 'train')
            progress.update(5, 5, {'train/loss': 1.5}, 100.0)
            progress.update(10, 5, None, 100.0)
            progress.close()
        self.assertEqual(
            err.getvalue(),
            'train: step 5/10 loss 1.500, 100 steps/s\ntrain: step 10/10 loss 1.500, 100 steps/s\n',
        )

    def test_resume_is_identical_to_an_uninterrupted_run(self):
        config = test_config.get_config()
        straight = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, straight)
        resumed = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, resumed, stop_at_step=6)
        self.assertEqual([r['step'] for r in _train_rows(resumed)], [3, 6])
        trainer.train_and_evaluate(config, resumed)
        self.assertEqual(_train_rows(straight), _train_rows(resumed))
        params_a, step_a = _restore_params(straight, config)
        params_b, step_b = _restore_params(resumed, config)
        self.assertEqual(step_a, 12)
        self.assertEqual(step_b, 12)
        jax.tree.map(np.testing.assert_array_equal, params_a, params_b)

    def test_finished_run_is_not_trained_again(self):
        workdir = self.create_tempdir().full_path
        first = trainer.train_and_evaluate(test_config.get_config(), workdir)
        rows = _rows(workdir)
        again = trainer.train_and_evaluate(test_config.get_config(), workdir)
        self.assertEqual(first, again)
        self.assertEqual(rows, _rows(workdir))
        _, step = _restore_params(workdir, test_config.get_config())
        self.assertEqual(step, test_config.get_config().num_train_steps)

    def test_load_of_a_run_without_checkpoints_gives_no_step(self):
        config = test_config.get_config()
        fresh = trainer.Run(config).create_train_state()
        workdir = self.create_tempdir().full_path
        state, step = checkpoints.load(workdir, fresh)
        self.assertIsNone(step)
        jax.tree.map(np.testing.assert_array_equal, state.params, fresh.params)
        self.assertFalse((Path(workdir) / 'checkpoints').exists())  # Read-only: nothing made.

    def test_load_leaves_a_save_in_flight_alone(self):
        # Evaluating a run while it trains must not remove the trainer's half-written step.
        config = test_config.get_config()
        workdir = self.create_tempdir().full_path
        trainer.train_and_evaluate(config, workdir)
        in_flight = Path(workdir) / 'checkpoints' / '999.orbax-checkpoint-tmp'
        in_flight.mkdir()
        _, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
        self.assertEqual(step, config.num_train_steps)
        self.assertTrue(in_flight.is_dir())

    def test_workdir_of_another_config_is_refused(self):
        workdir = self.create_tempdir().full_path
        config = test_config.get_config()
        trainer.train_and_evaluate(config, workdir, stop_at_step=3)
        config.beta = 2.0
        with self.assertRaisesRegex(ValueError, r'different config.*beta: 1\.0 -> 2\.0'):
            trainer.train_and_evaluate(config, workdir)
        trainer.train_and_evaluate(config, workdir, overwrite=True, stop_at_step=3)
        self.assertEqual(json.loads((Path(workdir) / 'config.json').read_text())['beta'], 2.0)

    def test_train_step_compiles_once_across_chunks(self):
        traces = []
        original = steps.train_step

        def counting(*args, **kwargs):
            traces.append(None)  # Runs only while tracing.
            return original(*args, **kwargs)

        steps.train_step = counting
        try:
            trainer.train_and_evaluate(test_config.get_config(), self.create_tempdir().full_path)
        finally:
            steps.train_step = original
        self.assertLen(traces, 1)

    @parameterized.named_parameters(
        ('negative_learning_rate', 'optim.learning_rate', -1.0, r'optim\.learning_rate=-1\.0'),
        ('unknown_objective', 'objective', 'vi', r"objective='vi'.*'elbo'"),
        ('zero_k', 'k_samples', 0, r'k_samples=0.*>= 1'),
        ('unknown_dataset', 'input.dataset', 'cifar', r"input\.dataset.*'cifar'"),
    )
    def test_bad_config_value_names_key_and_value(self, key, value, pattern):
        config = test_config.get_config()
        *parents, leaf = key.split('.')
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
        with self.assertRaisesRegex(ValueError, pattern):
            trainer.train_and_evaluate(config, self.create_tempdir().full_path)


class ThroughputTest(absltest.TestCase):
    def test_first_call_of_each_chunk_length_is_left_out(self):
        throughput = trainer.Throughput()
        self.assertIsNone(throughput.steps_per_sec)  # Nothing ran.
        throughput.record(100, 30.0)  # compiles 100-step calls
        # Only compiling calls so far: their rate, said to include compilation (not 0 or None).
        self.assertAlmostEqual(throughput.steps_per_sec, 100 / 30.0)
        self.assertTrue(throughput.includes_compilation)
        throughput.record(100, 1.0)
        throughput.record(40, 20.0)  # compiles the shorter last call
        throughput.record(100, 1.0)
        self.assertAlmostEqual(throughput.steps_per_sec, 200 / 2.0)
        self.assertFalse(throughput.includes_compilation)

    def test_add_sums_accumulates_in_place(self):
        sums = {'loss': 1.0}
        trainer.add_sums(sums, {'loss': np.float32(2.0), 'kl': np.float32(3.0)}, float)
        self.assertEqual(sums, {'loss': 3.0, 'kl': 3.0})


@pytest.mark.slow
class CommandLineTest(absltest.TestCase):
    def _run(self, *args):
        env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
        return subprocess.run(
            [sys.executable, '-m', 'vae_jax.train', '--config', 'configs/test.py', *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def test_misspelt_key_fails_at_parse_time(self):
        proc = self._run('--workdir', self.create_tempdir().full_path, '--config.betta=4')
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn('betta', proc.stderr)

    def test_cli_trains_with_overrides(self):
        workdir = self.create_tempdir().full_path
        proc = self._run('--workdir', workdir, '--config.beta=0.5', '--config.num_train_steps=6')
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        saved = json.loads((Path(workdir) / 'config.json').read_text())
        self.assertEqual(saved['beta'], 0.5)
        self.assertEqual(json.loads((Path(workdir) / 'eval.json').read_text())['step'], 6)
        self.assertIn('test ELBO', proc.stdout)


class ScalarMetricsTest(absltest.TestCase):
    def test_dicts_of_scalars_are_flattened_and_lists_left_out(self):
        metrics = {
            'elbo': -90.5,
            'nll': None,
            'kl_per_dim': [0.1, 0.2],
            'active_units_per_layer': {'z1': 20, 'z2': 5},
            'posterior_mean_variance': {'z1': [0.1], 'z2': [0.2]},
        }
        self.assertEqual(
            trainer.scalar_metrics(metrics, 'eval'),
            {
                'eval/elbo': -90.5,
                'eval/active_units_per_layer/z1': 20.0,
                'eval/active_units_per_layer/z2': 5.0,
            },
        )


if __name__ == '__main__':
    absltest.main()
