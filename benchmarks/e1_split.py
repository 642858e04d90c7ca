"""Where E1's time goes: the pieces of one evaluation chunk, each timed alone.

    python -m benchmarks.e1_split

E1 (`benchmarks/eval_nll_benchmark.py`) evaluates 20 examples per call in chunks of 500
importance samples of the W1 model (784-200-200-50 tanh): 10,000 examples x 5,000 samples are
5,000 chunks of [20, 500] samples. Timed here, each as its own jitted function (XLA's default
options and threads, random weights): the normal draws (one key per sample, as the library
draws them, and one draw for the whole chunk), the decoder's three GEMMs, and the decoder with
the Bernoulli log-likelihood. Prints the median ms per chunk and what 5,000 chunks take.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

EXAMPLES, CHUNK, LATENT = 20, 500, 50
CHUNKS_IN_E1 = 10_000 * 5_000 // (EXAMPLES * CHUNK)


def main() -> None:
    weights = [
        0.1 * jax.random.normal(jax.random.key(i), shape)
        for i, shape in enumerate([(LATENT, 200), (200, 200), (200, 784)])
    ]
    x = (jax.random.uniform(jax.random.key(9), (EXAMPLES, 1, 784)) > 0.5).astype(jnp.float32)

    def per_sample_keys(key):  # as evaluation._log_weights: fold_in per example, per sample
        def example(k):
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(k, jnp.arange(CHUNK))
            return jax.vmap(lambda kk: jax.random.normal(kk, (LATENT,)))(keys)

        examples = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(EXAMPLES))
        return jax.vmap(example)(examples)

    def one_draw(key):
        return jax.random.normal(key, (EXAMPLES, CHUNK, LATENT))

    def logits(z):
        h = jnp.tanh(z @ weights[0])
        return jnp.tanh(h @ weights[1]) @ weights[2]

    def log_likelihood(z):
        lg = logits(z)
        softplus = jnp.maximum(lg, 0.0) + jnp.log1p(jnp.exp(jnp.minimum(lg, -lg)))
        return jnp.sum(x * lg - softplus, -1)

    pieces = {
        'normal draws, one key per sample': per_sample_keys,
        'normal draws, one key per chunk': one_draw,
        'decoder GEMMs (+ the draw)': lambda k: jnp.sum(logits(one_draw(k)), -1),
        'decoder + log-likelihood (+ the draw)': lambda k: log_likelihood(one_draw(k)),
    }
    for name, fn in pieces.items():
        fn = jax.jit(fn)
        jax.block_until_ready(fn(jax.random.key(0)))
        times = []
        for i in range(20):
            start = time.perf_counter()
            jax.block_until_ready(fn(jax.random.key(i)))
            times.append(time.perf_counter() - start)
        ms = 1e3 * float(np.median(times))
        print(f'{name:40s} {ms:7.2f} ms per chunk -> {ms * CHUNKS_IN_E1 / 1e3:5.0f} s for E1')


if __name__ == '__main__':
    main()
