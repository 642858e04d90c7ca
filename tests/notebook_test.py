"""examples/quickstart.ipynb runs top to bottom, and the numbers it prints hold.

The notebook trains a VAE on the embedded digits through the trainer, loads it, estimates
log p(x) with K = 1, 10, 100 importance samples, and trains a hand-written model with
`vae_jax.losses.iwae`. Besides running without error, its printed estimates must rise with K
(the importance-sampled bound tightens; over the ~360 test images the gaps are several nats,
far above the Monte-Carlo noise) and the hand-written model's training bound must improve.
About a minute of CPU.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import nbclient
import nbformat
import pytest
from absl.testing import absltest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'examples' / 'quickstart.ipynb'


def printed(notebook) -> str:
    """The text the notebook's cells printed (stream outputs), in order."""
    return ''.join(
        output.get('text', '')
        for cell in notebook.cells
        if cell.cell_type == 'code'
        for output in cell.outputs
        if output.output_type == 'stream'
    )


@pytest.mark.slow
class QuickstartNotebookTest(absltest.TestCase):
    def test_runs_and_its_numbers_hold(self):
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        # The run directory goes under TMPDIR (tempfile.mkdtemp in the kernel): the test's own.
        env = {'TMPDIR': self.create_tempdir().full_path, 'MPLBACKEND': 'Agg'}
        with mock.patch.dict(os.environ, env):
            nbclient.NotebookClient(
                notebook,
                timeout=600,
                kernel_name='python3',
                resources={'metadata': {'path': str(REPO)}},
            ).execute()
        text = printed(notebook)

        estimates = re.findall(r'K = +(\d+): mean log p\(x\) >= (-?[\d.]+)', text)
        self.assertEqual([k for k, _ in estimates], ['1', '10', '100'], text)
        values = [float(v) for _, v in estimates]
        self.assertLess(values[0], values[1], text)
        self.assertLess(values[1], values[2], text)

        train_bounds = [float(v) for v in re.findall(r'train IWAE-5 bound (-?[\d.]+)', text)]
        self.assertLen(train_bounds, 5, text)
        self.assertGreater(train_bounds[-1], train_bounds[0] + 10.0, text)
        self.assertRegex(text, r'test IWAE-100 bound -?[\d.]+ nats per image')


if __name__ == '__main__':
    absltest.main()
