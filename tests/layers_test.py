"""Tests for vae_jax.layers: the layer-spec parser and the fast ConvTranspose."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
from absl.testing import absltest, parameterized

from vae_jax import layers
from vae_jax.layers import LayerSpec

_IMPLEMENTATIONS = ('subpixel', 'custom_vjp')


def _named_grid(**axes):
    """named_parameters for the product of `axes`, named like 'subpixel_k3x3_s2x2_same'."""
    cases = []
    for values in itertools.product(*axes.values()):
        parts = ['x'.join(map(str, v)) if isinstance(v, tuple) else str(v).lower() for v in values]
        name = '_'.join(
            f'{k[0]}{p}' if isinstance(v, tuple) else p
            for k, p, v in zip(axes, parts, values, strict=True)
        )
        cases.append(dict(testcase_name=name, **dict(zip(axes, values, strict=True))))
    return cases


def _reference(features, kernel, strides, padding, output_padding):
    """flax's ConvTranspose; output padding via its explicit (low, high) padding."""
    if any(output_padding):
        padding = layers.conv_transpose_padding(kernel, strides, padding, output_padding)
    return nn.ConvTranspose(features, kernel, strides, padding=padding)


def _grads(module, variables, x, cotangent):
    """Value and d<y, cotangent>/d(x, kernel, bias), jitted."""

    def loss(variables, x):
        y = module.apply(variables, x)
        return jnp.sum(y * cotangent), y

    (_, y), (d_vars, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables, x
    )
    return y, dx, d_vars['params']['kernel'], d_vars['params']['bias']


class ConvTransposeTest(parameterized.TestCase):
    @parameterized.named_parameters(
        _named_grid(
            implementation=_IMPLEMENTATIONS,
            kernel=((3, 3), (5, 5), (4, 3)),
            strides=((1, 1), (2, 2), (3, 2)),
            padding=('SAME', 'VALID'),
        )
    )
    def test_values_and_gradients_match_flax(self, implementation, kernel, strides, padding):
        self._check_against_flax(implementation, kernel, strides, padding, (0, 0))

    @parameterized.named_parameters(
        _named_grid(
            implementation=_IMPLEMENTATIONS,
            kernel=((3, 3), (5, 5)),
            padding=('SAME', 'VALID'),
            output_padding=((1, 1), (1, 0)),
        )
    )
    def test_output_padding_matches_flax_explicit_padding(
        self, implementation, kernel, padding, output_padding
    ):
        self._check_against_flax(implementation, kernel, (2, 2), padding, output_padding)

    def _check_against_flax(self, implementation, kernel, strides, padding, output_padding):
        x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
        ours = layers.ConvTranspose(
            4, kernel, strides, padding, output_padding, implementation=implementation
        )
        ref = _reference(4, kernel, strides, padding, output_padding)
        variables = ref.init(jax.random.key(1), x)
        # Same parameter layout and initialisers: identical trees from the same key.
        ours_vars = ours.init(jax.random.key(1), x)
        jax.tree.map(np.testing.assert_array_equal, ours_vars, variables)
        variables = {
            'params': {
                'kernel': variables['params']['kernel'],
                'bias': jax.random.normal(jax.random.key(2), (4,)),
            }
        }
        y_ref = ref.apply(variables, x)
        expected_size = [
            h * s + (max(k - s, 0) if padding == 'VALID' else 0) + p
            for h, k, s, p in zip(x.shape[1:3], kernel, strides, output_padding, strict=True)
        ]
        self.assertEqual(y_ref.shape, (2, *expected_size, 4))
        cotangent = jax.random.normal(jax.random.key(3), y_ref.shape)
        for got, want in zip(
            _grads(ours, variables, x, cotangent),
            _grads(ref, variables, x, cotangent),
            strict=True,
        ):
            self.assertEqual(got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    @parameterized.parameters(*_IMPLEMENTATIONS)
    def test_gradients_under_vmap_match_flax(self, implementation):
        # The training path: a per-example function vmapped over the batch, params shared.
        x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
        ours = layers.ConvTranspose(3, (3, 3), (2, 2), implementation=implementation)
        ref = nn.ConvTranspose(3, (3, 3), (2, 2))
        variables = ref.init(jax.random.key(1), x)

        def grad_fn(module):
            def loss(variables):
                per_example = lambda xi: jnp.sum(jnp.sin(module.apply(variables, xi)))
                return jnp.sum(jax.vmap(per_example, axis_name='batch')(x))

            return jax.jit(jax.grad(loss))(variables)

        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
            grad_fn(ours),
            grad_fn(ref),
        )

    @parameterized.named_parameters(('unbatched', ()), ('one_axis', (3,)), ('two_axes', (2, 3)))
    def test_leading_batch_axes(self, batch_shape):
        x = jax.random.normal(jax.random.key(0), (*batch_shape, 4, 4, 2))
        module = layers.ConvTranspose(3, (3, 3), (2, 2))
        variables = module.init(jax.random.key(1), x)
        y = module.apply(variables, x)
        self.assertEqual(y.shape, (*batch_shape, 8, 8, 3))
        flat = module.apply(variables, x.reshape((-1, 4, 4, 2)))
        np.testing.assert_allclose(y.reshape(flat.shape), flat, rtol=1e-6, atol=1e-6)

    def test_check_grads_second_order(self):
        x = jax.random.normal(jax.random.key(0), (1, 3, 3, 2))
        kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 2))
        fn = lambda x, k: layers.conv_transpose(x, k, (2, 2), 'SAME')
        jax.test_util.check_grads(fn, (x, kernel), order=2, modes=['fwd', 'rev'], eps=1e-2)

    def test_unknown_implementation(self):
        with self.assertRaisesRegex(ValueError, "implementation='fft'.*subpixel"):
            layers.conv_transpose(
                jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 1)), (2, 2), 'SAME', (0, 0), 'fft'
            )


class UpsampleTest(absltest.TestCase):
    def test_nearest_matches_kron(self):
        x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape((2, 3, 2, 2))
        want = np.stack(
            [
                np.stack([np.kron(x[n, :, :, c], np.ones((2, 2))) for c in range(2)], -1)
                for n in range(2)
            ]
        )
        np.testing.assert_array_equal(layers.upsample_nearest(jnp.asarray(x), 2), want)


class ParseSpecTest(parameterized.TestCase):
    def test_parses_every_kind(self):
        spec = (
            'dense(16)-relu-reshape(4,4,1)-conv(8,3x3,s2,valid)-bn-convt(4,5,s2,op1)-maxpool(2)'
            '-maxpool(3,s1,same)-upsample(2)-flatten-dense(out)'
        )
        got = layers.parse_spec(spec, 'model.decoder', allow_out=True)
        self.assertEqual(
            got,
            (
                LayerSpec('dense', 'dense(16)', features=16),
                LayerSpec('relu', 'relu'),
                LayerSpec('reshape', 'reshape(4,4,1)', shape=(4, 4, 1)),
                LayerSpec(
                    'conv',
                    'conv(8,3x3,s2,valid)',
                    features=8,
                    kernel_size=(3, 3),
                    strides=(2, 2),
                    padding='VALID',
                ),
                LayerSpec('bn', 'bn'),
                LayerSpec(
                    'convt',
                    'convt(4,5,s2,op1)',
                    features=4,
                    kernel_size=(5, 5),
                    strides=(2, 2),
                    output_padding=(1, 1),
                ),
                LayerSpec(
                    'maxpool', 'maxpool(2)', kernel_size=(2, 2), strides=(2, 2), padding='VALID'
                ),
                LayerSpec('maxpool', 'maxpool(3,s1,same)', kernel_size=(3, 3), strides=(1, 1)),
                LayerSpec('upsample', 'upsample(2)', factor=2),
                LayerSpec('flatten', 'flatten'),
                LayerSpec('dense', 'dense(out)', uses_out=True),
            ),
        )

    def test_groups_expand(self):
        grouped = layers.parse_spec('[conv(4,3x3)-[bn-selu]x2]x2-flatten', 'model.encoder')
        explicit = layers.parse_spec(
            'conv(4,3x3)-bn-selu-bn-selu-conv(4,3x3)-bn-selu-bn-selu-flatten', 'model.encoder'
        )
        self.assertEqual(grouped, explicit)

    def test_empty_spec_is_empty_body(self):
        self.assertEqual(layers.parse_spec('', 'model.encoder'), ())

    @parameterized.named_parameters(
        ('unknown_token', 'dense(8)-swish', "'swish'"),
        ('unknown_option', 'conv(8,3x3,s2,full)', "unknown option 'full'"),
        ('missing_kernel', 'conv(8)', 'expected conv'),
        ('bad_width', 'dense(8.5)', 'integer >= 1'),
        ('bad_kernel', 'conv(8,3x3x3)', 'kernel size'),
        ('activation_args', 'relu(2)', 'takes no arguments'),
        ('big_output_padding', 'convt(8,3x3,s2,op2)', 'smaller than the stride'),
        ('bad_group', '[conv(8,3x3)-relu', 'malformed group'),
        ('out_not_last', 'dense(out)-relu', '`out` is only allowed'),
    )
    def test_errors_name_key_token_and_allowed(self, spec, message):
        with self.assertRaisesRegex(ValueError, 'model.decoder') as cm:
            layers.parse_spec(spec, 'model.decoder', allow_out=True)
        self.assertIn(message, str(cm.exception))
        if 'only allowed' not in message:
            self.assertIn('Allowed tokens: dense(N|out), conv(', str(cm.exception))

    def test_out_not_allowed_in_encoder(self):
        with self.assertRaisesRegex(ValueError, r"model.encoder.*'dense\(out\)'.*`out`"):
            layers.parse_spec('dense(8)-dense(out)', 'model.encoder')


if __name__ == '__main__':
    absltest.main()
