"""Gradient time through flax's nn.ConvTranspose vs vae_jax.layers.ConvTranspose, same run.

Times jit(grad) of a loss through the two conv-transposes of the benchmark-W3 decoder
(7x7x64 -> 14x14x64 -> 28x28x32, 3x3, stride 2, SAME) in two layouts:
- 'batched': one call on [B, 7, 7, 64];
- 'vmapped': the training path, a per-example function under jax.vmap(axis_name='batch').
Repeats are interleaved across implementations so that machine load affects all alike.

Run:  python benchmarks/convt_grad.py [--batch_size 128] [--repeats 10]
Prints one JSON object: median milliseconds per gradient (and per forward pass) for 'flax' and
each of our implementations, flax / ours gradient-time ratios, and the largest relative gradient
difference from flax.
"""

import argparse
import json
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import layers


class _Decoder(nn.Module):
    """Two W3 conv-transposes: [..., 7, 7, 64] -> [..., 28, 28, 32]."""

    implementation: str  # 'flax' or one of layers.CONV_TRANSPOSE_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x):
        for features in (64, 32):
            if self.implementation == 'flax':
                x = nn.ConvTranspose(features, (3, 3), (2, 2))(x)
            else:
                x = layers.ConvTranspose(
                    features, (3, 3), (2, 2), implementation=self.implementation
                )(x)
            x = nn.relu(x)
        return x


def _fns(implementation: str, layout: str):
    """(module, jitted forward, jitted gradient of a loss) in the given layout."""
    module = _Decoder(implementation)

    def forward(params, x):
        if layout == 'batched':
            return module.apply(params, x)
        return jax.vmap(lambda xi: module.apply(params, xi), axis_name='batch')(x)

    loss = lambda params, x: jnp.mean(forward(params, x) ** 2)
    return module, jax.jit(forward), jax.jit(jax.grad(loss))


def _median_ms(fns, args, repeats):
    """Median wall time per call of each fn, repeats interleaved across fns."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args()

    x = jax.random.normal(jax.random.key(0), (args.batch_size, 7, 7, 64))
    names = ('flax', 'subpixel', 'custom_vjp')
    result = {
        'benchmark': 'convt_grad',
        'shapes': '[B,7,7,64] -convt(64,3x3,s2)-> [B,14,14,64] -convt(32,3x3,s2)-> [B,28,28,32]',
        'batch_size': args.batch_size,
        'repeats': args.repeats,
        'backend': jax.default_backend(),
        'devices': str(jax.devices()),
        'machine': platform.processor() or platform.machine(),
        'jax': jax.__version__,
    }
    for layout in ('batched', 'vmapped'):
        fns, forwards, params, compile_s = {}, {}, None, {}
        for name in names:
            module, forward, fn = _fns(name, layout)
            params = params or module.init(jax.random.key(1), x)  # identical layouts
            start = time.perf_counter()
            jax.block_until_ready(fn(params, x))
            compile_s[name] = time.perf_counter() - start
            jax.block_until_ready(forward(params, x))
            fns[name], forwards[name] = fn, forward
        reference = fns['flax'](params, x)
        median_ms = _median_ms(fns, (params, x), args.repeats)
        forward_ms = _median_ms(forwards, (params, x), args.repeats)
        max_rel_diff = {}
        for name in names[1:]:
            grads = fns[name](params, x)
            diffs = jax.tree.map(
                lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)),
                grads,
                reference,
            )
            max_rel_diff[name] = max(jax.tree.leaves(diffs))
        result[layout] = {
            'grad_median_ms': median_ms,
            'grad_flax_over_ours': {n: median_ms['flax'] / median_ms[n] for n in names[1:]},
            'forward_median_ms': forward_ms,
            'grad_first_call_s': compile_s,
            'max_rel_grad_diff_vs_flax': max_rel_diff,
        }
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
