"""The sharded on-device train split: exact gathers of its rows, no all-gather, the auto budget.

The multi-device checks run in a subprocess whose CPU platform is split into 4 devices
(`--xla_force_host_platform_device_count`, which must be set before JAX starts, as in
tests/multidevice_test.py); training on the sharded split is compared with one device there.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import sharded_data, streaming

REPO = Path(__file__).resolve().parents[1]

# For 2 and 4 of the 4 devices, and uint8, bool and float32 rows (with -0.0 and a NaN payload):
# the shard_map gather of random indices with duplicates, as bits, its layout, and the
# all-gathers of the compiled program; and, as a control that the HLO check can see one, the
# all-gathers of XLA's own partitioning of `split[idx]`.
_GATHER = r"""
import json, re, sys
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import sharded_data

N, S, B = 10, 3, 8  # N is not a multiple of 4: put_split pads it.


def all_gathers(text):
    return [l.strip() for l in text.splitlines() if re.search(r'\ball-gather(-start)?\(', l)]


rng = np.random.default_rng(0)
bits = rng.integers(0, 2**32, (N, 3, 2), dtype=np.uint64).astype(np.uint32)
floats = bits.view(np.float32).copy()
floats[0, 0, 0], floats[1, 0, 0] = -0.0, np.float32(np.nan)
floats[2, 0, 0] = np.uint32(0x7FC12345).view(np.float32)  # A NaN with a payload.
rows = {
    'uint8': rng.integers(0, 256, (N, 3, 2), dtype=np.uint8),
    'bool': rng.integers(0, 2, (N, 3, 2)).astype(bool),
    'float32': floats,
}
labels = rng.integers(0, 10, (N,), dtype=np.int32)
idx = rng.integers(0, N, (S, B)).astype(np.int32)
idx[0, :3] = 2  # Duplicates, within a batch and across batches.
idx[2, -1] = 2
idx[1, 0], idx[1, 1] = 0, N - 1  # The first and the last row.
out = {}
for num_devices in (2, 4):
    mesh = Mesh(np.array(jax.devices()[:num_devices]), ('data',))
    for name, images in rows.items():
        split = sharded_data.put_split(lambda a, b: (images[a:b], labels[a:b]), N, mesh)
        fn = jax.jit(lambda i, s, l: sharded_data.gather_rows((s, l), i, mesh))
        got_images, got_labels = fn(jnp.asarray(idx), *split)
        want = images[idx]
        view = np.uint8 if name != 'float32' else np.uint32
        out[f'{name}_{num_devices}'] = {
            'split_shards': sorted(list(s.data.shape) for s in split[0].addressable_shards),
            'images_equal': bool(np.array_equal(
                np.asarray(got_images).view(view), want.view(view))),
            'dtype': str(got_images.dtype),
            'labels_equal': bool(np.array_equal(np.asarray(got_labels), labels[idx])),
            'shards': sorted(list(s.data.shape) for s in got_images.addressable_shards),
            'spec': list(got_images.sharding.spec),
            'all_gathers': all_gathers(fn.lower(jnp.asarray(idx), *split).compile().as_text()),
        }
    naive = jax.jit(
        lambda i, s: s[i], out_shardings=NamedSharding(mesh, P(None, 'data'))
    ).lower(jnp.asarray(idx), split[0]).compile().as_text()
    out[f'naive_{num_devices}'] = all_gathers(naive)
    # vmapped over a leading model axis of the indices, as the vectorised sweep calls it.
    models_idx = jnp.asarray(rng.integers(0, N, (2, S, B)).astype(np.int32))
    vmapped = jax.jit(jax.vmap(
        lambda i, s, l: sharded_data.gather_rows((s, l), i, mesh), in_axes=(0, None, None)))
    got_images, _ = vmapped(models_idx, *split)  # The last split of the loop: float32 rows.
    want = images[np.asarray(models_idx)]
    out[f'vmapped_{num_devices}'] = {
        'images_equal': bool(np.array_equal(
            np.asarray(got_images).view(np.uint32), want.view(np.uint32))),
        'all_gathers': all_gathers(vmapped.lower(models_idx, *split).compile().as_text()),
    }
print(json.dumps(out))
"""


def _env(num_devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'SLURM_', 'OMPI_'))}
    flags = f'--xla_force_host_platform_device_count={num_devices}'
    return {**env, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': flags}


def _data_sized(all_gathers, num_rows):
    """The all-gather instructions whose result has `num_rows` rows (the whole split's)."""
    return [line for line in all_gathers if f'[{num_rows},' in line or f'[{num_rows}]' in line]


class GatherTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        proc = subprocess.run(
            [sys.executable, '-c', _GATHER],
            cwd=REPO,
            env=_env(4),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        cls.out = json.loads(proc.stdout.strip().splitlines()[-1])

    @parameterized.product(dtype=('uint8', 'bool', 'float32'), num_devices=(2, 4))
    def test_gather_is_the_rows_bit_for_bit(self, dtype, num_devices):
        case = self.out[f'{dtype}_{num_devices}']
        block = math.ceil(10 / num_devices)  # N = 10 rows padded to a multiple of the devices.
        self.assertEqual(case['split_shards'], [[block, 3, 2]] * num_devices)
        self.assertTrue(case['images_equal'])
        self.assertEqual(case['dtype'], dtype)
        self.assertTrue(case['labels_equal'])
        # Each device holds its 8 / D examples of each of the 3 batches.
        self.assertEqual(case['shards'], [[3, 8 // num_devices, 3, 2]] * num_devices)
        self.assertEqual(case['spec'], [None, 'data'])
        # No all-gather of the split: the rows cross devices in a reduce-scatter of the batch.
        self.assertEqual(_data_sized(case['all_gathers'], block * num_devices), [])

    @parameterized.parameters(2, 4)
    def test_vmapped_gather_is_the_rows_without_all_gather(self, num_devices):
        case = self.out[f'vmapped_{num_devices}']  # float32 rows, two models' indices
        self.assertTrue(case['images_equal'])
        padded = math.ceil(10 / num_devices) * num_devices
        self.assertEqual(_data_sized(case['all_gathers'], padded), [])

    @parameterized.parameters(2, 4)
    def test_the_hlo_check_sees_xla_all_gathering_the_split(self, num_devices):
        # XLA's own partitioning of split[idx] all-gathers the whole padded split (the reason
        # for the explicit gather); the check above would see it.
        padded = math.ceil(10 / num_devices) * num_devices
        self.assertNotEmpty(_data_sized(self.out[f'naive_{num_devices}'], padded))


class PutSplitTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ('divisible', 12, 4, 3), ('padded', 10, 4, 3), ('one_device', 10, 1, 10), ('tiny', 5, 4, 2)
    )
    def test_rows_per_device(self, num_examples, num_devices, expected):
        self.assertEqual(sharded_data.rows_per_device(num_examples, num_devices), expected)

    def test_one_device_holds_the_split_unpadded(self):
        import jax
        from jax.sharding import Mesh

        images = np.arange(30, dtype=np.uint8).reshape(10, 3)
        labels = np.arange(10, dtype=np.int32)
        read = []

        def read_rows(start, stop):
            read.append((start, stop))
            return images[start:stop], labels[start:stop]

        mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
        got_images, got_labels = sharded_data.put_split(read_rows, 10, mesh)
        self.assertEqual(read, [(0, 10)])
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


class AutoBudgetTest(parameterized.TestCase):
    def _config(self, path, budget_gb):
        config = test_config.get_config()
        config.input.dataset, config.input.path = 'npz', path
        config.input.pipeline, config.input.device_budget_gb = 'auto', budget_gb
        config.input.num_test_examples = None
        return config

    def test_a_device_holds_ceil_n_over_d_rows(self):
        path = os.path.join(self.create_tempdir().full_path, 'data.npz')
        # 10 rows of 10x10x1 uint8 (100 bytes each); 4 devices hold ceil(10 / 4) = 3 rows each.
        np.savez(
            path,
            train_images=np.zeros((10, 10, 10, 1), np.uint8),
            test_images=np.zeros((4, 10, 10, 1), np.uint8),
        )
        config = self._config(path, 350e-9)  # Between 3 rows (4 devices) and 4 (3 devices).
        self.assertEqual(streaming.train_split_bytes(config.input), 1000)
        self.assertEqual(streaming.train_split_bytes(config.input, num_devices=4), 300)
        for num_devices, expected in ((1, 'stream'), (3, 'stream'), (4, 'device')):
            pipeline = streaming.load_splits(config.input, num_devices=num_devices)[0]
            self.assertEqual(pipeline, expected, num_devices)

    def test_a_set_in_memory_counts_its_rows_per_device(self):
        # digits: 1437 training images of 8x8x1 uint8; on 4 devices 360 rows of 64 bytes each.
        config = test_config.get_config()
        config.input.pipeline = 'auto'
        for budget_bytes, expected in ((360 * 64 + 0.5, 'device'), (360 * 64 - 0.5, 'stream')):
            config.input.device_budget_gb = budget_bytes * 1e-9
            got = streaming.load_splits(config.input, num_devices=4)
            self.assertEqual(got[0], expected, budget_bytes)
            self.assertLen(got[1]['image'], 1437)


if __name__ == '__main__':
    absltest.main()
