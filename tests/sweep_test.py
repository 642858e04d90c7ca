"""Sweeps: the vectorised sweep (vae_jax/sweep.py) against separate runs, and the shell scripts
(scripts/sweep_beta.sh, scripts/sweep_k.sh, scripts/aggregate.py) end to end on configs/test.py."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import checkpoints, sweep, trainer

REPO = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-5, 1e-6  # vmapped matmuls may sum in another order than unbatched ones


def _config(**sweep_values):
    config = test_config.get_config()
    config.eval_every_steps = 12  # one eval, at the end: keeps the test fast
    for key, value in sweep_values.items():
        config.sweep[key] = value
    return config


def _train_rows(workdir):
    rows = []
    for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if k.startswith('train/') or k == 'step'}
        row.pop('train/steps_per_sec', None)
        if len(row) > 1:
            rows.append(row)
    return rows


def _aggregate_module():
    spec = importlib.util.spec_from_file_location('aggregate', REPO / 'scripts' / 'aggregate.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_step_metrics(config):
    """Every step's training metrics of a separate run, one jitted step per call: an
    independent reference for the log rows (no trainer loop, no log windows)."""
    run = trainer.Run(config)
    state = run.create_train_state()
    perm_epoch = jnp.zeros((), jnp.int32)
    perm = run.permutation_fn(perm_epoch)
    images, labels = run.train_data['image'], run.train_data['label']
    beta = jnp.asarray(config.beta, jnp.float32)
    out = []
    for _ in range(config.num_train_steps):
        state, perm, perm_epoch, metrics = run.chunk_fn(
            state, perm, perm_epoch, images, labels, run.loop_key, run.data_key, beta, num_steps=1
        )
        out.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return out


def _params(workdir, config):
    state, step = checkpoints.load(workdir, trainer.Run(config).create_train_state())
    return jax.device_get(state.params), step


class ModelConfigsTest(parameterized.TestCase):
    def test_cross_product_and_each_config_is_that_of_a_separate_run(self):
        configs = sweep.model_configs(_config(beta='0.5, 2', seed='0,3'))
        self.assertEqual(
            list(configs), ['beta=0.5,seed=0', 'beta=0.5,seed=3', 'beta=2,seed=0', 'beta=2,seed=3']
        )
        separate = test_config.get_config()
        separate.eval_every_steps = 12
        separate.beta = 2.0
        separate.seed = 3
        self.assertEqual(
            configs['beta=2,seed=3'].to_json_best_effort(), separate.to_json_best_effort()
        )

    def test_unset_key_takes_the_single_config_value(self):
        config = _config(seed='1,2')
        config.beta = 4.0
        self.assertEqual(list(sweep.model_configs(config)), ['beta=4,seed=1', 'beta=4,seed=2'])

    @parameterized.named_parameters(
        ('not_a_number', 'beta', '0.5,x', 'sweep.beta'),
        ('empty', 'beta', ' , ', 'sweep.beta'),
        ('float_seed', 'seed', '0,1.5', 'sweep.seed'),
        ('repeated', 'beta', '1,1.0', 'repeats'),
    )
    def test_bad_sweep_value_names_the_key(self, key, value, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            sweep.model_configs(_config(**{key: value}))

    def test_run_for_another_config_key_is_refused(self):
        run = trainer.Run(_config())
        other = _config()
        other.model.latent_dim = 3
        with self.assertRaisesRegex(ValueError, 'latent_dim'):
            run.for_config(other)


@pytest.mark.slow
class VectorisedSweepTest(absltest.TestCase):
    def test_models_match_separate_runs_and_resume(self):
        root = Path(self.create_tempdir().full_path)
        config = _config(beta='0.5,2', seed='0,1')
        # Interrupted at step 6, then resumed from the per-model checkpoints.
        stopped = sweep.train_and_evaluate(config, root / 'vec', stop_at_step=6)
        self.assertEqual(stopped['beta=2,seed=1'], {'step': 6})
        results = sweep.train_and_evaluate(config, root / 'vec')
        self.assertLen(results, 4)
        # The model whose beta AND seed both differ from the first model's (so mixed-up keys
        # or betas would show) against a separate run.
        for name, beta, seed in (('beta=2,seed=1', 2.0, 1),):
            separate = _config()
            separate.beta, separate.seed = beta, seed
            alone = trainer.train_and_evaluate(separate, root / name)
            model_dir = root / 'vec' / name
            self.assertEqual(
                (model_dir / 'config.json').read_text(), (root / name / 'config.json').read_text()
            )
            rows_vec, rows_alone = _train_rows(model_dir), _train_rows(root / name)
            self.assertEqual([r['step'] for r in rows_vec], [3, 6, 9, 12])
            self.assertEqual([r['step'] for r in rows_alone], [3, 6, 9, 12])
            for a, b in zip(rows_vec, rows_alone, strict=True):
                self.assertEqual(set(a), set(b))
                for k in a:
                    np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)
            # Each row is the mean over its own log window (steps 1-3, 4-6, ...), not over all
            # steps since the start: against per-step metrics computed without the trainer.
            per_step = _per_step_metrics(separate)
            every = separate.log_every_steps
            for row in rows_vec:
                window = per_step[row['step'] - every : row['step']]
                self.assertEqual(row['train/skipped'], 0)
                for k in window[0]:
                    if k == 'skipped':
                        continue
                    mean = np.mean([m[k] for m in window])
                    if k == 'grad_norm':  # sampled at a call's last step; one call per window
                        self.assertEqual(separate.steps_per_call, every)
                        mean = window[-1][k]
                    np.testing.assert_allclose(
                        row[f'train/{k}'], mean, rtol=RTOL, atol=ATOL, err_msg=f'{row["step"]} {k}'
                    )
            # The check can tell the two apart: the loss falls, so the means differ.
            last = rows_vec[-1]['train/loss']
            self.assertGreater(abs(last - np.mean([m['loss'] for m in per_step])), 1e-3)
            for k in ('elbo', 'recon', 'kl', 'iwae_k1', 'iwae_k4'):
                np.testing.assert_allclose(
                    results[name][k], alone[k], rtol=RTOL, atol=ATOL, err_msg=k
                )
            self.assertEqual(results[name]['seed'], seed)
            self.assertEqual(results[name]['sweep']['num_models'], 4)
            params_vec, step_vec = _params(model_dir, separate)
            params_alone, step_alone = _params(root / name, separate)
            self.assertEqual((step_vec, step_alone), (12, 12))
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
                params_vec,
                params_alone,
            )
            for picture in ('reconstructions.png', 'samples.png'):
                self.assertTrue((model_dir / 'images' / picture).is_file(), picture)
        # The models really differ (a sweep that trained one model N times would pass above
        # only if beta and seed were ignored by both paths).
        self.assertNotAlmostEqual(results['beta=0.5,seed=0']['kl'], results['beta=2,seed=0']['kl'])
        self.assertNotAlmostEqual(results['beta=2,seed=0']['kl'], results['beta=2,seed=1']['kl'])

        # A rerun finds every model finished and trains nothing.
        before = (root / 'vec' / 'beta=2,seed=1' / 'metrics.jsonl').read_text()
        again = sweep.train_and_evaluate(config, root / 'vec')
        self.assertEqual(again['beta=2,seed=1']['elbo'], results['beta=2,seed=1']['elbo'])
        self.assertEqual((root / 'vec' / 'beta=2,seed=1' / 'metrics.jsonl').read_text(), before)

        # aggregate.py reads vectorised run directories: one row per model, beta and seed columns.
        self.assertEqual(_aggregate_module().main([str(root / 'vec')]), 0)
        with (root / 'vec' / 'summary.csv').open() as f:
            table = list(csv.DictReader(f))
        self.assertEqual(
            [(r['beta'], r['seed']) for r in table],
            [('0.5', '0'), ('0.5', '1'), ('2.0', '0'), ('2.0', '1')],
        )
        self.assertTrue(all(r['trained'] == 'vectorised (4 models)' for r in table))
        np.testing.assert_allclose(float(table[3]['test ELBO']), results['beta=2,seed=1']['elbo'])
        self.assertTrue((root / 'vec' / 'rate_distortion.png').is_file())


@pytest.mark.slow
class ShellSweepTest(absltest.TestCase):
    """The scripts start `python -m vae_jax.train` per value: a few seconds each."""

    def _run(self, script, *args, runs_root):
        env = {
            **os.environ,
            'JAX_PLATFORMS': 'cpu',
            'JAX_DISABLE_MOST_OPTIMIZATIONS': '1',
            'PYTHON': sys.executable,
            'VAE_RUNS_ROOT': str(runs_root),
        }
        return subprocess.run(
            ['bash', str(REPO / 'scripts' / script), *args],
            cwd=runs_root,  # not the repository: the scripts work from any directory
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def test_beta_sweep_reports_a_failing_run_finishes_the_others_and_skips_on_rerun(self):
        root = Path(self.create_tempdir().full_path)
        config = str(REPO / 'configs' / 'test.py')
        short = ['--', '--config.num_train_steps=6', '--config.eval_every_steps=6']
        # beta=-1 is rejected by the config validation: that run fails, the other goes on.
        proc = self._run(
            'sweep_beta.sh', config, '0.5', '-1', '--jobs', '2', *short, runs_root=root
        )
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        sweep_dir = root / 'test_beta'
        self.assertIn('FAILED', proc.stderr)
        self.assertIn(str(sweep_dir / '-1' / 'train.log'), proc.stderr)
        self.assertIn('config.beta=-1.0 is invalid', (sweep_dir / '-1' / 'train.log').read_text())
        run = sweep_dir / '0.5'
        saved = json.loads((run / 'config.json').read_text())
        self.assertEqual((saved['beta'], saved['num_train_steps']), (0.5, 6))
        self.assertEqual(json.loads((run / 'eval.json').read_text())['step'], 6)
        with (sweep_dir / 'summary.csv').open() as f:
            table = list(csv.DictReader(f))
        self.assertEqual(sorted(r['run'] for r in table), ['-1', '0.5'])  # one row per value
        self.assertIn('failed', next(r for r in table if r['run'] == '-1')['status'])
        self.assertIn('| 0.5 | 0.5 |', (sweep_dir / 'summary.md').read_text())

        # Rerun: the finished run is skipped without starting the trainer.
        log_before = (run / 'train.log').read_text()
        metrics_before = (run / 'metrics.jsonl').read_text()
        proc = self._run('sweep_beta.sh', config, '0.5', *short, runs_root=root)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn('[beta=0.5] finished before, skipped', proc.stdout)
        self.assertEqual((run / 'train.log').read_text(), log_before)
        self.assertEqual((run / 'metrics.jsonl').read_text(), metrics_before)

    def test_k_sweep_passes_overrides_and_evaluates(self):
        root = Path(self.create_tempdir().full_path)
        proc = self._run(
            'sweep_k.sh',
            str(REPO / 'configs' / 'test.py'),
            '2',
            '--name',
            'ks',
            '--evaluate',
            '8',
            '--evaluate_args',
            '--nopictures',
            '--',
            '--config.objective=iwae',
            '--config.num_train_steps=6',
            '--config.eval_every_steps=6',
            runs_root=root,
        )
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        run = root / 'ks' / '2'
        config = json.loads((run / 'config.json').read_text())
        self.assertEqual((config['k_samples'], config['objective']), (2, 'iwae'))
        result = json.loads((run / 'eval.json').read_text())
        self.assertEqual(result['nll_k'], 8)
        # The importance-sampled NLL (k=8) is no larger than the negative ELBO.
        self.assertLessEqual(result['nll'], -result['elbo'] + 1e-4)
        self.assertIn('NLL (k=8)', (root / 'ks' / 'summary.md').read_text())


if __name__ == '__main__':
    absltest.main()
