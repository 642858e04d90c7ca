"""Tests for vae_jax/input_transform.py: stored rows -> model input, inside the jitted step.

The reference for the 8-bit path is the float32 path it replaced: the whole split scaled (and
binarised, and padded) once on the host with numpy, written out here independently of
vae_jax/data.py.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from configs import test as test_config
from vae_jax import data, data_sources, evaluation, input_transform, steps, trainer
from vae_jax.input_transform import InputSpec, to_model_input

NUM_TRAIN, NUM_STEPS = 64, 3


def _bits(x):
    """float32 values as their bit patterns: equality of these is equality bit for bit."""
    return np.asarray(x, np.float32).view(np.uint32)


class ToModelInputTest(parameterized.TestCase):
    @parameterized.named_parameters(('max_255', 255), ('max_16', 16), ('max_1', 1))
    def test_every_uint8_value_is_numpys_division_bit_for_bit(self, max_value):
        stored = np.arange(max_value + 1, dtype=np.uint8).reshape(-1, 1)  # [V, 1]
        spec = InputSpec('uint8', max_value)
        expected = stored.astype(np.float32) / np.float32(max_value)
        alone = jax.jit(to_model_input, static_argnums=1)(stored, spec)
        self.assertEqual(alone.dtype, jnp.float32)
        np.testing.assert_array_equal(_bits(alone), _bits(expected))
        # Fused into the ops that read it (x 2 is exact), the values are still the same.
        fused = jax.jit(lambda x: to_model_input(x, spec) * 2.0 + 0.0)(stored)
        np.testing.assert_array_equal(_bits(fused), _bits(expected * np.float32(2)))

    def test_bool_and_float32(self):
        binary = np.random.default_rng(0).random((5, 3, 3, 1)) < 0.5
        x = jax.jit(to_model_input, static_argnums=1)(binary, InputSpec('bool'))
        np.testing.assert_array_equal(x, binary.astype(np.float32))
        self.assertEqual(x.dtype, jnp.float32)
        points = np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32)
        x = jax.jit(to_model_input, static_argnums=1)(points, InputSpec('float32'))
        np.testing.assert_array_equal(_bits(x), _bits(points))

    @parameterized.named_parameters(('28', 28, 1), ('8', 8, 1), ('odd_31x5', (31, 5), 3))
    def test_padding_is_the_hosts_padding(self, size, channels):
        height, width = (size, size) if isinstance(size, int) else size
        shape = (4, height, width, channels)
        stored = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
        spec = InputSpec('uint8', 255, pad_to_32=True)
        x = jax.jit(to_model_input, static_argnums=1)(stored, spec)
        expected = data.pad_to_32(stored.astype(np.float32) / np.float32(255))
        self.assertEqual(x.shape, (4, 32, 32, channels))
        self.assertEqual(spec.model_shape(shape[1:]), (32, 32, channels))
        np.testing.assert_array_equal(_bits(x), _bits(expected))

    def test_spec_is_hashable_and_built_from_config_and_data(self):
        config = test_config.get_config().input
        stored = data.get_datasets(config)[0]['image']
        spec = input_transform.spec_from(config, stored)
        self.assertEqual(spec, InputSpec('uint8', 16, False))
        self.assertEqual(hash(spec), hash(InputSpec('uint8', 16, False)))
        config.pad_to_32 = True
        self.assertEqual(input_transform.spec_from(config, stored > 8), InputSpec('bool', 1, True))

    def test_bad_stored_dtypes_give_one_clear_message(self):
        config = test_config.get_config().input
        with self.assertRaisesRegex(
            ValueError,
            r"input.dataset='digits': stored images have dtype int64; allowed: uint8, bool, "
            r'float32',
        ):
            input_transform.spec_from(config, np.zeros((2, 8, 8, 1), np.int64))
        with self.assertRaisesRegex(
            ValueError, r"to_model_input: the stored rows have dtype float32, but the input spec "
            r"says 'uint8'",
        ):  # fmt: skip
            to_model_input(np.zeros((2, 8, 8, 1), np.float32), InputSpec('uint8', 16))
        with self.assertRaisesRegex(ValueError, r"stored_dtype='int8' is not supported; allowed"):
            InputSpec('int8')
        with self.assertRaisesRegex(ValueError, r'max_value=256 is invalid; allowed: an int in'):
            InputSpec('uint8', 256)
        with self.assertRaisesRegex(ValueError, r'max_value=255 is invalid; allowed: 1 for bool'):
            InputSpec('bool', 255)
        with self.assertRaisesRegex(ValueError, r'pad_to_32: images are 33x33, larger than'):
            to_model_input(np.zeros((1, 33, 33, 1), np.uint8), InputSpec('uint8', 255, True))

    def test_the_step_refuses_unconverted_rows(self):
        run = trainer.Run(test_config.get_config())
        state = run.create_train_state()
        with self.assertRaisesRegex(ValueError, r'batch_terms: images are uint8; the model takes'):
            steps.train_step(
                state,
                jnp.asarray(run.train_data['image'][:16]),
                jnp.asarray(run.train_data['label'][:16]),
                run.loop_key,
                jnp.float32(1.0),
                static=run.static,
            )
        with self.assertRaisesRegex(ValueError, r'evaluate_dataset: images are uint8 without'):
            evaluation.evaluate_dataset(
                run.eval_key,
                run.test_data['image'],
                run.test_data['label'],
                variables=run.variables(state),
                model_fn=run.parts.model_fn,
            )


# (name, model overrides): every likelihood (a Gaussian's scale mode does not touch the input).
_LIKELIHOODS = (
    ('bernoulli', dict(likelihood='bernoulli')),
    ('continuous_bernoulli', dict(likelihood='continuous_bernoulli')),
    ('gaussian', dict(likelihood='gaussian', gaussian_sigma='learned')),
)
_CASES = [
    (f'{name}_{binarize}{"_padded" if pad else ""}', model, binarize, pad)
    for name, model in _LIKELIHOODS
    for binarize in ('none', 'static', 'dynamic')
    for pad in (False, True)
]


def _float_path(stored, max_value, binarize, pad, seed):
    """The images as the host made them before they stayed 8-bit: float32, whole split."""
    x = stored.astype(np.float32) / np.float32(max_value)
    if binarize == 'static':
        x = (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)
    if pad:
        x = data.pad_to_32(x)
    return x


class EightBitPathTest(parameterized.TestCase):
    """Training and evaluation on stored rows equal the float32 path on the same keys."""

    def _config(self, model, binarize, pad, tmp):
        config = test_config.get_config()
        config.input.num_train_examples = NUM_TRAIN
        config.input.num_test_examples = 20
        config.input.binarize = binarize
        config.input.pad_to_32 = pad
        config.model.update(model)
        stored = data_sources.load_digits()
        max_value = 16
        if model['likelihood'] == 'bernoulli' and binarize == 'none':
            # A Bernoulli needs 0/1 data: digits thresholded, stored 0/255 in an .npz.
            ink = {s: np.where(stored[s]['image'] > 8, 255, 0).astype(np.uint8) for s in stored}
            path = str(Path(tmp) / 'digits01.npz')
            np.savez(path, train_images=ink['train'], test_images=ink['test'])
            config.input.dataset, config.input.path = 'npz', path
            stored = {s: {'image': ink[s]} for s in ink}
            max_value = 255
        return config, stored, max_value

    @parameterized.named_parameters(*_CASES)
    def test_same_loss_and_parameters_as_the_float32_path(self, model, binarize, pad):
        tmp = self.create_tempdir().full_path
        config, stored, max_value = self._config(model, binarize, pad, tmp)
        run = trainer.Run(config)
        images = run.train_data['image']
        self.assertEqual(images.dtype, np.bool_ if binarize == 'static' else np.uint8)
        reference = _float_path(stored['train']['image'][:NUM_TRAIN], max_value, binarize, pad, 0)
        # The model's input is the float path's, bit for bit (the same operations).
        np.testing.assert_array_equal(
            _bits(to_model_input(images, run.input_spec)), _bits(reference)
        )
        self.assertEqual(run.data_shape, reference.shape[1:])

        def train(chunk_fn, train_images):
            epoch = jnp.zeros((), jnp.int32)
            state, _, _, sums = chunk_fn(
                run.create_train_state(),
                run.permutation_fn(epoch),
                epoch,
                jnp.asarray(train_images),
                jnp.asarray(run.train_data['label']),
                run.loop_key,
                run.data_key,
                jnp.float32(1.0),
                num_steps=NUM_STEPS,
            )
            return jax.device_get((state.params, sums))

        float_chunk = jax.jit(
            functools.partial(run.chunk_body, input_spec=None), static_argnames='num_steps'
        )
        params, sums = train(run.chunk_fn, images)
        float_params, float_sums = train(float_chunk, reference)
        # Different programs (the conversion is fused into the step): equal up to float32
        # rounding of a reordered sum at most; in practice the numbers are identical.
        np.testing.assert_allclose(sums['loss'], float_sums['loss'], rtol=1e-6)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
            params,
            float_params,
        )
        self.assertTrue(np.isfinite(sums['loss']))

    @parameterized.named_parameters(('grey', 'none', False), ('dynamic_padded', 'dynamic', True))
    def test_evaluation_of_stored_rows_equals_the_float32_path(self, binarize, pad):
        config, stored, _ = self._config(
            dict(likelihood='continuous_bernoulli'), binarize, pad, None
        )
        run = trainer.Run(config)
        variables = run.variables(run.create_train_state())
        images, labels = run.eval_split()
        options = dict(
            variables=variables,
            model_fn=run.parts.model_fn,
            k_list=(1, 3),
            nll_k=6,
            dynamic_binarize=run.static.dynamic_binarize,
            batch_size=7,
        )
        got = evaluation.evaluate_dataset(
            run.eval_key, images, labels, input_spec=run.input_spec, **options
        )
        reference = _float_path(stored['test']['image'][:20], 16, binarize, pad, 1)
        expected = evaluation.evaluate_dataset(run.eval_key, reference, labels, **options)
        for name in ('elbo', 'iwae_k3', 'nll', 'recon'):
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=name)


if __name__ == '__main__':
    absltest.main()
