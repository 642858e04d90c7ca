"""The published leaderboards hold together: each README table is what its report.py computes
from the committed run directories (runs trained here but not committed do not count).

The dSprites leaderboard (experiments/disentanglement/): besides, every published run is a
finished run of its row's config and seed, and the Expected line of each configs/dsprites_*.py
names its row's MIG as the table has it. The zoo (experiments/zoo/): its table of finished rows.
"""

import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from absl.testing import absltest

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / 'experiments' / 'disentanglement'
SEEDS = (0, 1, 2)
# Row -> its config file and the beta it trains with (run.sh's table).
CONFIGS = {
    'vae': ('dsprites_beta_vae', 1.0),
    'beta_vae': ('dsprites_beta_vae', 4.0),
    'annealed_vae': ('dsprites_annealed_vae', None),
    'factor_vae': ('dsprites_factor_vae', None),
    'dip_vae_i': ('dsprites_dip_vae_i', None),
    'dip_vae_ii': ('dsprites_dip_vae_ii', None),
    'beta_tcvae': ('dsprites_beta_tcvae', None),
}


def _report(experiment: Path):
    name = f'{experiment.name}_report'
    spec = importlib.util.spec_from_file_location(name, experiment / 'report.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed_workdirs(experiment: Path) -> Path:
    """A copy of the files of `experiment`/workdirs that git tracks (a local, unpublished run
    is not part of the leaderboard)."""
    prefix = f'{(experiment / "workdirs").relative_to(REPO)}/'
    listed = subprocess.run(
        ['git', 'ls-files', '-z', prefix],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b'\0')
    root = Path(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()))
    for name in filter(None, (n.decode() for n in listed)):
        target = root / name.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, target)
    return root


@absltest.skipUnless((REPO / '.git').exists(), 'not a git checkout: the published files unknown')
class PublishedLeaderboardTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.report = _report(HERE)
        cls.workdirs = _committed_workdirs(HERE)
        cls.addClassCleanup(shutil.rmtree, cls.workdirs, ignore_errors=True)

    def test_readme_table_is_the_reports_table_of_the_committed_runs(self):
        readme = (HERE / 'README.md').read_text()
        published = readme.split(self.report.START, 1)[1].split(self.report.END, 1)[0]
        self.assertEqual(published.strip(), self.report.table(self.workdirs))

    def test_every_row_has_three_finished_seeds_of_its_config(self):
        self.assertEqual(set(self.report.ROWS), set(CONFIGS))
        for row, (config_name, beta) in CONFIGS.items():
            for seed in SEEDS:
                with self.subTest(row=row, seed=seed):
                    run = self.workdirs / row / f'seed{seed}'
                    config = json.loads((run / 'config.json').read_text())
                    result = json.loads((run / 'eval.json').read_text())
                    timing = json.loads((run / 'timing.json').read_text())
                    self.assertEqual(config['seed'], seed)
                    self.assertEqual(result['step'], config['num_train_steps'])
                    self.assertEqual(config['num_train_steps'], 30_000)
                    self.assertIn(f'configs/{config_name}.py', timing['train_command'])
                    self.assertIn(f'--config.seed={seed}', timing['train_command'])
                    if beta is not None:
                        self.assertEqual(config['beta'], beta)
                    for key in ('disentanglement/mig', 'disentanglement/factor_vae', 'recon'):
                        self.assertIn(key, result)
                    self.assertTrue((run / 'images' / 'latent_traversals.png').is_file())
                    self.assertFalse((run / 'checkpoints').exists())  # Never published.

    def test_each_configs_expected_mig_is_its_rows(self):
        def mig(row):
            values = [
                r['disentanglement/mig'] for r in self.report.finished_runs(self.workdirs, row)
            ]
            return f'{statistics.fmean(values):.3f} +- {statistics.stdev(values):.3f}'

        stated = {}
        for config_name in {name for name, _ in CONFIGS.values()}:
            doc = (REPO / 'configs' / f'{config_name}.py').read_text().split('"""')[1]
            stated[config_name] = re.findall(r'MIG (\d\.\d{3} \+- \d\.\d{3})', doc)
        for row, (config_name, _) in CONFIGS.items():
            with self.subTest(row):
                # dsprites_beta_vae.py names beta 4 first, then the plain VAE (beta 1).
                index = 1 if row == 'vae' else 0
                self.assertEqual(stated[config_name][index], mig(row))


@absltest.skipUnless((REPO / '.git').exists(), 'not a git checkout: the published files unknown')
class PublishedZooTest(absltest.TestCase):
    def test_readme_table_is_the_reports_table_of_the_committed_runs(self):
        zoo = REPO / 'experiments' / 'zoo'
        report = _report(zoo)
        workdirs = _committed_workdirs(zoo)
        self.addCleanup(shutil.rmtree, workdirs, ignore_errors=True)
        finished = [r for r in report.rows(workdirs) if r['train_seconds'] is not None]
        self.assertLen(finished, len(report.zoo.MODELS))  # Every model of configs/zoo.py.
        readme = (zoo / 'README.md').read_text()
        published = readme.split(report.START, 1)[1].split(report.END, 1)[0]
        self.assertEqual(published.strip(), report.table(finished))


if __name__ == '__main__':
    absltest.main()
