"""Wall time and peak memory of the importance-sampled test NLL (Burda et al. 2016 protocol).

The IWAE-paper MLP (784-200-200-50, tanh; plain matmuls with random-init parameters, since the
cost does not depend on the values) with the project's diagonal posterior and Bernoulli
likelihood, on MNIST-shaped binary data, k = 5000 importance samples, through
`evaluation.evaluate_dataset`. Peak memory is the process's maximum resident set size (the same
number `/usr/bin/time -v` reports); on GPU also the device's peak bytes in use.

    python benchmarks/eval_nll_benchmark.py --num_examples 10000 --k 5000
    python benchmarks/eval_nll_benchmark.py --num_examples 200 --chunk_size 100 --batch_size 50

`--reference` instead times a straightforward unchunked implementation (all k weights of an
example at once, vmapped over the batch) on the same data, for comparison.

Prints one JSON object.

Measured (2-core XLA:CPU VM, jax 0.10.2, shared with other jobs: load average ~12, so compare
CPU seconds; the job got 28% of the machine):
- 10 000 examples, k = 5000, chunk_size 500, batch_size 20 (the defaults): 854 CPU-s (about
  0.085 CPU-s per example; 50 min wall under that load, ~7 min wall expected with both cores
  free), peak RSS 594 MiB (608 MiB by /usr/bin/time -v) of which 410 MiB is the process before
  evaluation (JAX, the data).
- chunk_size x batch_size in {50..2500} x {20..200} (200 examples): 16.6-19.1 CPU-s, flat up
  to ~25 000 samples per scan step and ~10% slower at 50 000; peak RSS grows with the product:
  ~490 MiB at 2 000-5 000, ~550 MiB at 10 000, ~910 MiB at 50 000.
- Reference (unchunked, batch_size 20, 100 examples): the same CPU time, peak RSS 1 319 MiB
  against 541 MiB, and it grows linearly with k.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions, evaluation

LATENT, HIDDEN, PIXELS = 50, 200, 784


def init_mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n), jnp.float32) / np.sqrt(m), jnp.zeros((n,), jnp.float32))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(layers, h):
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = jnp.tanh(h)
    return h


def make_bind_fn():
    def bind_fn(variables, y):
        del y

        def encode(x):
            params = mlp(variables['encoder'], x.reshape(PIXELS))
            return distributions.make_posterior('diagonal', params)

        def decode(z):
            logits = mlp(variables['decoder'], z).reshape(z.shape[:-1] + (28, 28, 1))
            return distributions.make_likelihood('bernoulli', logits, event_ndims=3)

        return encode, decode

    return bind_fn


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--num_examples', type=int, default=10_000)
    parser.add_argument('--k', type=int, default=5000)
    parser.add_argument('--chunk_size', type=int, default=evaluation.CHUNK_SIZE)
    parser.add_argument('--batch_size', type=int, default=evaluation.BATCH_SIZE)
    parser.add_argument('--reference', action='store_true')
    args = parser.parse_args(argv)

    enc_key, dec_key, data_key = jax.random.split(jax.random.key(0), 3)
    variables = {
        'encoder': init_mlp(enc_key, (PIXELS, HIDDEN, HIDDEN, 2 * LATENT)),
        'decoder': init_mlp(dec_key, (LATENT, HIDDEN, HIDDEN, PIXELS)),
    }
    rng = np.random.default_rng(0)
    images = (rng.random((args.num_examples, 28, 28, 1)) < 0.13).astype(np.float32)
    labels = np.zeros((args.num_examples,), np.int32)
    bind_fn = make_bind_fn()
    rss_before = peak_rss_mb()

    marks = []  # (examples done, time) after each batch
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    if args.reference:
        fn = jax.jit(
            jax.vmap(
                lambda key, x: (
                    jax.nn.logsumexp(
                        evaluation.log_importance_weights(
                            key, x, *bind_fn(variables, None), k_samples=args.k
                        )
                    )
                    - jnp.log(float(args.k))
                ),
                in_axes=(0, 0),
            )
        )
        out = []
        for start in range(0, args.num_examples, args.batch_size):
            x = images[start : start + args.batch_size]
            keys = jax.vmap(jax.random.fold_in, (None, 0))(data_key, jnp.arange(x.shape[0]))
            out.append(np.asarray(fn(keys, jnp.asarray(x))))
        nll = -float(np.mean(np.concatenate(out)))
    else:
        result = evaluation.evaluate_dataset(
            data_key,
            images,
            labels,
            bind_fn,
            variables,
            k_list=(),
            nll_k=args.k,
            chunk_size=args.chunk_size,
            batch_size=args.batch_size,
            progress=lambda done, total: marks.append((done, time.perf_counter())),
        )
        nll = result['nll']
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0

    report = {
        'implementation': 'reference_unchunked' if args.reference else 'evaluate_dataset',
        'device': str(jax.devices()[0]),
        'num_examples': args.num_examples,
        'k': args.k,
        'chunk_size': None if args.reference else args.chunk_size,
        'batch_size': args.batch_size,
        'wall_s': round(wall, 2),
        'examples_per_s': round(args.num_examples / wall, 2),
        # CPU seconds of this process: less sensitive than wall time to other jobs on the host.
        'cpu_s': round(cpu, 2),
        'peak_rss_mb': round(peak_rss_mb(), 1),
        'peak_rss_before_eval_mb': round(rss_before, 1),
        'nll': nll,
    }
    if len(marks) > 1:  # Throughput after the first batch (which includes compilation).
        (done0, t_first), (done1, t_last) = marks[0], marks[-1]
        report['first_batch_s'] = round(t_first - t0, 2)
        report['steady_examples_per_s'] = round((done1 - done0) / (t_last - t_first), 2)
    stats = jax.devices()[0].memory_stats()
    if stats and 'peak_bytes_in_use' in stats:
        report['device_peak_mb'] = round(stats['peak_bytes_in_use'] / 2**20, 1)
    print(json.dumps(report))


if __name__ == '__main__':
    main(sys.argv[1:])
