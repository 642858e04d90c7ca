"""E1: wall time and peak memory of the k = 5000 importance-sampled test NLL (Burda et al. 2016).

`--impl jax` runs `vae_jax.evaluation.evaluate_dataset`, the library's evaluation, with the W1
model (the IWAE-paper MLP 784-200-200-50 tanh, diagonal posterior, Bernoulli likelihood, built by
`trainer.Run` from the W1 config; random-init parameters, since the cost does not depend on their
values) on random binary MNIST-shaped test images. `--impl jax_unchunked` times a straightforward
unchunked JAX version (all k log-weights of an example at once, vmapped over the batch) for the
memory comparison. `--impl torch` is a straightforward PyTorch loop over the same computation
(batches of examples, chunks of importance samples, a running log-sum-exp, `torch.no_grad`).
Run each in its own process (`benchmarks/run.py` does), so the peak resident set size (VmHWM,
the number `/usr/bin/time -v` reports) is the evaluation's own.

    python -m benchmarks.eval_nll_benchmark --impl jax --num_examples 10000 --k 5000
    python -m benchmarks.eval_nll_benchmark --impl jax --num_examples 200 --chunk_size 100
    python -m benchmarks.eval_nll_benchmark --impl torch --num_examples 200 --threads 2
    python -m benchmarks.eval_nll_benchmark --impl jax --num_examples 100 --xla_default

Prints one JSON object.

Measured earlier (2-core VM shared with other jobs, so CPU seconds): the library's defaults
(chunk_size 500, batch_size 20) take about 0.085 CPU-s per example and ~600 MiB peak RSS, of
which ~400 MiB is the process before evaluation; speed is flat over chunk_size x batch_size from
2,000 to 25,000 samples per scan step while memory grows with it (~910 MiB at 50,000). The
unchunked version takes the same CPU time but its memory grows linearly with k (1.3 GiB at
k = 5000, batch 20). These figures predate `backends.compiler_options()`: most of the time went to
the per-pixel Bernoulli log-likelihood reduction, which XLA:CPU handed to YNNPACK; with those
fusions off, as evaluation now compiles, the same evaluation runs about 2x faster
(benchmarks/results.md). On an Intel Xeon 2-vCPU machine (2026-12-02, one XLA thread, loaded)
the gap was 5-7x: 15-23 examples/s as shipped against 2.7-3.4 with `--xla_default`, 100 images,
NLL equal to 3e-7.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time

import numpy as np

from benchmarks import workloads


def _peak_rss_mb() -> float:
    """This process's peak resident set size, MiB.

    /proc's VmHWM, which starts afresh at exec; `ru_maxrss` does not (a child started by a
    large parent would report the parent's peak).
    """
    try:
        for line in open('/proc/self/status').read().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _w1_run():
    from vae_jax import trainer

    with workloads.random_data():
        return trainer.Run(workloads.get_config('W1'))


def run_jax(num_examples: int, k: int, chunk_size: int | None, batch_size: int | None) -> dict:
    import jax

    from vae_jax import evaluation

    run = _w1_run()
    variables = run.variables(run.create_train_state())
    images = run.test_data['image'][:num_examples]
    labels = run.test_data['label'][:num_examples]
    chunk_size = chunk_size or evaluation.CHUNK_SIZE
    batch_size = batch_size or evaluation.BATCH_SIZE
    rss_before = _peak_rss_mb()
    marks = []
    cpu0, t0 = _cpu_s(), time.perf_counter()
    result = evaluation.evaluate_dataset(
        run.eval_key,
        images,
        labels,
        run.bind_fn,
        variables,
        k_list=(),
        nll_k=k,
        chunk_size=chunk_size,
        batch_size=batch_size,
        dynamic_binarize=False,
        progress=lambda done, total: marks.append((done, time.perf_counter())),
    )
    wall = time.perf_counter() - t0
    report = {
        'impl': 'jax',
        'device': str(jax.devices()[0]),
        'chunk_size': chunk_size,
        'batch_size': batch_size,
        'wall_s': wall,
        'cpu_s': _cpu_s() - cpu0,
        'peak_rss_mb': _peak_rss_mb(),
        'peak_rss_before_eval_mb': rss_before,
        'nll': result['nll'],
    }
    if len(marks) > 1:  # after the first batch, which includes compilation
        (done0, t_first), (done1, t_last) = marks[0], marks[-1]
        report['first_batch_s'] = t_first - t0
        report['steady_examples_per_s'] = (done1 - done0) / (t_last - t_first)
    stats = jax.devices()[0].memory_stats()
    if stats and 'peak_bytes_in_use' in stats:  # accelerators
        report['device_peak_mb'] = stats['peak_bytes_in_use'] / 2**20
    return report


def run_jax_unchunked(num_examples: int, k: int, batch_size: int | None) -> dict:
    """All k log-weights of an example at once (memory O(batch_size * k)), vmapped."""
    import jax
    import jax.numpy as jnp

    from vae_jax import evaluation

    run = _w1_run()
    variables = run.variables(run.create_train_state())
    images = run.test_data['image'][:num_examples]
    batch_size = batch_size or evaluation.BATCH_SIZE

    def log_px(key, x):
        encode, decode = run.bind_fn(variables, None)
        log_w = evaluation.log_importance_weights(key, x, encode, decode, k_samples=k)
        return jax.nn.logsumexp(log_w) - jnp.log(float(k))

    fn = jax.jit(jax.vmap(log_px))
    rss_before = _peak_rss_mb()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    out = []
    for start in range(0, num_examples, batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        keys = jax.vmap(jax.random.fold_in, (None, 0))(run.eval_key, start + jnp.arange(len(x)))
        out.append(np.asarray(fn(keys, x)))
    return {
        'impl': 'jax_unchunked',
        'batch_size': batch_size,
        'wall_s': time.perf_counter() - t0,
        'cpu_s': _cpu_s() - cpu0,
        'peak_rss_mb': _peak_rss_mb(),
        'peak_rss_before_eval_mb': rss_before,
        'nll': -float(np.mean(np.concatenate(out))),
    }


def run_torch(num_examples: int, k: int, threads: int, batch_size=20, chunk_size=500) -> dict:
    import torch

    from benchmarks import torch_reference

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_reference.DenseVAE().eval()
    images = torch.from_numpy(workloads.random_images(workloads.NUM_TEST, 1)[:num_examples])
    rss_before = _peak_rss_mb()
    log_likelihoods = []
    cpu0, t0 = _cpu_s(), time.perf_counter()
    first_batch = None
    with torch.no_grad():
        for start in range(0, num_examples, batch_size):
            x = images[start : start + batch_size]  # [B, 28, 28, 1]
            params = model.encoder(x)
            loc, scale = params[:, :50], torch.exp(params[:, 50:])
            total = torch.full((x.shape[0],), -math.inf)
            for chunk_start in range(0, k, chunk_size):
                c = min(chunk_size, k - chunk_start)
                z = loc + scale * torch.randn((c, *loc.shape))  # [C, B, D]
                log_px = torch_reference.bernoulli_log_prob(model.decode(z), x)
                log_pz = (-0.5 * z**2 - 0.5 * torch_reference.LOG_2PI).sum(-1)
                log_qz = torch_reference.normal_log_prob(z, loc, scale)
                total = torch.logaddexp(total, torch.logsumexp(log_px + log_pz - log_qz, 0))
            log_likelihoods.append(total - math.log(k))
            if first_batch is None:
                first_batch = (x.shape[0], time.perf_counter())
    t_end = time.perf_counter()
    report = {
        'impl': 'torch',
        'threads': threads,
        'chunk_size': chunk_size,
        'batch_size': batch_size,
        'wall_s': t_end - t0,
        'cpu_s': _cpu_s() - cpu0,
        'peak_rss_mb': _peak_rss_mb(),
        'peak_rss_before_eval_mb': rss_before,
        'nll': -float(torch.cat(log_likelihoods).mean()),
    }
    if num_examples > first_batch[0]:
        report['steady_examples_per_s'] = (num_examples - first_batch[0]) / (t_end - first_batch[1])
    return report


def main(argv) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--impl', choices=('jax', 'jax_unchunked', 'torch'), default='jax')
    parser.add_argument('--num_examples', type=int, default=workloads.NUM_TEST)
    parser.add_argument('--k', type=int, default=5000)
    parser.add_argument('--chunk_size', type=int, default=None, help='jax: default the library')
    parser.add_argument('--batch_size', type=int, default=None, help='jax: default the library')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument(
        '--xla_default',
        action='store_true',
        help="jax: compile with XLA's default options instead of the library's (YNNPACK on, CPU)",
    )
    args = parser.parse_args(argv)
    if args.xla_default:
        from vae_jax import steps

        steps.CPU_COMPILER_OPTIONS = {}  # read when evaluation first jits its batch function
    if args.impl == 'jax':
        report = run_jax(args.num_examples, args.k, args.chunk_size, args.batch_size)
    elif args.impl == 'jax_unchunked':
        report = run_jax_unchunked(args.num_examples, args.k, args.batch_size)
    else:
        report = run_torch(args.num_examples, args.k, args.threads)
    report = {'workload': 'E1', 'num_examples': args.num_examples, 'k': args.k, **report}
    if args.xla_default:
        report['xla_default'] = True
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))
    return report


if __name__ == '__main__':
    main(sys.argv[1:])
