"""vae_jax's training path against a PyTorch reference, side by side in one run (`make bench`).

    python -m benchmarks.run                      # everything, writes benchmarks/results.md
    python -m benchmarks.run --workloads W1,W3 --repeats 3 --no-torch_compile

Workloads (benchmarks/workloads.py): W1 IWAE-paper MLP k=1, W2 the same with the IWAE k=50 bound,
W3 a conv VAE; batch 128, Adam, random binary MNIST-shaped data. E1: the k=5000 test NLL over
10,000 images (`benchmarks/eval_nll_benchmark.py`, in child processes so that each peak memory is
its own).

What is timed:
- jax: `trainer.Run(config).chunk_fn`, called exactly as `trainer.train_and_evaluate` calls it
  (device-resident data, `steps_per_call` steps per call, donated state, one `device_get` of the
  metric sums per call), with the workload config's own `loop` / `steps_per_call`.
- torch: `benchmarks/torch_reference.py`, eager and (unless --no-torch_compile) `torch.compile`.
- minimal JAX (unless --no-minimal): `benchmarks/jax_minimal.py`, the same models written as a
  plain JAX/Flax loop (one key per step, closed-form loss, optax.adam, lax.scan, XLA defaults):
  what vae_jax's generality costs, or its conv layers and compiler options save.
- W3 also (unless --no-ynn_on) "jax, YNNPACK on": the same trainer function compiled with XLA's
  default options. vae_jax itself compiles with `steps.compiler_options()` (on XLA:CPU, YNNPACK
  library fusions off: XLA's own emitters for convolutions and reductions), so this row shows
  what that choice is worth.
A round is `--steps` optimizer steps. Every implementation first runs one untimed round
(compilation, warm-up); then the timed rounds of all implementations are interleaved, in a
rotating order, so machine load falls on all alike. Medians over rounds; s/epoch is the median
time per step times 468 steps (60,000 / 128).

Threads: the process is pinned to the first `--threads` CPUs (sched_setaffinity) before JAX or
torch start their thread pools, and torch.set_num_threads(--threads); XLA:CPU sizes its pool by
the CPUs it may run on, so both use the same cores (on a 2-core machine with --threads 2, all).

Peaks and floors: the machine's float32 GEMM peak is the faster of `jnp.dot` and `torch.mm` on
2048 x 2048 matrices. A workload's GEMM-bound floor is the time of its own matrix products
(`workloads.gemm_shapes`: forward, weight- and input-gradient GEMMs of every dense layer and
convolution as im2col GEMMs) each timed at its shape, the faster of jnp.dot and torch.mm.

Prints one JSON object per line; writes the Markdown tables to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import workloads

GEMM_SIZE = 2048
DEFAULT_STEPS = {'W1': 200, 'W2': 20, 'W3': 24}
STEPS_PER_EPOCH = workloads.NUM_TRAIN // workloads.BATCH_SIZE  # 468


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(row: dict, rows: list) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------
# Implementations: each has `epoch(num_steps) -> last loss` and a `name`.


class JaxTrainer:
    """vae_jax's own training path: `trainer.Run(config).chunk_fn`, called like the trainer.

    With `xla_default`, the same function (`chunk_fn`'s wrapped function, with its static and
    donated arguments) is jitted again without vae_jax's `steps.compiler_options()`.
    """

    def __init__(
        self,
        workload: str,
        *,
        loop: str | None = None,
        steps_per_call: int | None = None,
        xla_default: bool = False,
    ):
        import jax
        import jax.numpy as jnp

        from vae_jax import trainer

        self._jax = jax
        config = workloads.get_config(workload, loop=loop, steps_per_call=steps_per_call)
        with workloads.random_data():
            run = trainer.Run(config)
        self.run = run
        self.chunk_fn = run.chunk_fn
        if xla_default:
            self.chunk_fn = jax.jit(
                run.chunk_fn.__wrapped__, static_argnames=('num_steps',), donate_argnums=(0, 1)
            )
        self.steps_per_call = config.steps_per_call
        self.name = f'jax ({config.loop}, {config.steps_per_call} steps/call)'
        if xla_default:
            self.name += ', YNNPACK on (XLA default)'
        self.state = run.create_train_state()
        self.train_images = jax.device_put(run.train_data['image'], run.replicated)
        self.train_labels = jax.device_put(run.train_data['label'], run.replicated)
        self.beta = jnp.asarray(config.beta, jnp.float32)
        self.perm_epoch = jax.device_put(jnp.asarray(0, jnp.int32), run.replicated)
        self.perm = jax.device_put(run.permutation_fn(self.perm_epoch), run.replicated)

    def epoch(self, num_steps: int) -> float:
        """`num_steps` steps in calls of `steps_per_call` (a shorter last call, as the trainer)."""
        done, loss = 0, float('nan')
        while done < num_steps:
            n = min(self.steps_per_call, num_steps - done)
            self.state, self.perm, self.perm_epoch, sums = self.chunk_fn(
                self.state,
                self.perm,
                self.perm_epoch,
                self.train_images,
                self.train_labels,
                self.run.loop_key,
                self.run.data_key,
                self.beta,
                num_steps=n,
            )
            sums = self._jax.device_get(sums)  # the trainer's one host sync per call
            done += n
            loss = float(sums['loss']) / n
        return loss


class MinimalJaxTrainer:
    """`jax_minimal.Trainer`: a hand-written JAX/Flax loop; dense models scan as many steps per
    call as vae_jax, the conv model runs one step per call (scanning 4 steps per call made its
    conv gradients 4.6x slower in a trial run)."""

    def __init__(self, workload: str):
        from benchmarks import jax_minimal

        family = workloads.WORKLOADS[workload].family
        steps_per_call = workloads.LOOP_SETTINGS[family][1] if family == 'dense' else 1
        self.trainer = jax_minimal.Trainer(workload, steps_per_call=steps_per_call)
        self.name = self.trainer.name

    def epoch(self, num_steps: int) -> float:
        return self.trainer.epoch(num_steps)


class TorchTrainer:
    """`torch_reference.Trainer`, with its intra-op thread count set before every round."""

    def __init__(self, workload: str, *, compile: bool, threads: int):
        from benchmarks import torch_reference

        self.trainer = torch_reference.Trainer(workload, compile=compile)
        self.threads = threads
        self.name = ('torch.compile' if compile else 'torch eager') + f' ({threads} threads)'

    def epoch(self, num_steps: int) -> float:
        import torch

        torch.set_num_threads(self.threads)
        return self.trainer.epoch(num_steps)


# ---------------------------------------------------------------------------------------------
# Measurements.


def _gemm_fns(m: int, k: int, n: int) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    ta, tb = torch.randn(m, k), torch.randn(k, n)
    return {'jax': lambda: dot(a, b).block_until_ready(), 'torch': lambda: torch.mm(ta, tb)}


def gemm_peak(repeats: int = 5) -> dict:
    """float32 GFLOP/s of jnp.dot and torch.mm on 2048 x 2048 matrices (best and median)."""
    fns = _gemm_fns(GEMM_SIZE, GEMM_SIZE, GEMM_SIZE)
    times = {key: [] for key in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    flops = 2 * GEMM_SIZE**3
    return {
        f'{key}_gflops': {'best': flops / min(t) / 1e9, 'median': flops / np.median(t) / 1e9}
        for key, t in times.items()
    }


def gemm_floor_s_per_step(name: str, repeats: int = 5) -> float:
    """Sum over the workload's GEMMs of the faster of jnp.dot / torch.mm at each shape (medians)."""
    cache: dict = {}
    total = 0.0
    for shape in workloads.gemm_shapes(name):
        if shape not in cache:
            fns = _gemm_fns(*shape)
            cache[shape] = min(_median_time(fn, repeats) for fn in fns.values())
        total += cache[shape]
    return total


def time_rounds(impls: dict, num_steps: int, repeats: int) -> dict:
    """One untimed round each, then `repeats` interleaved timed rounds; wall and CPU seconds."""
    warmup = {}
    for key, impl in impls.items():
        start = time.perf_counter()
        impl.epoch(num_steps)
        warmup[key] = time.perf_counter() - start
    walls = {key: [] for key in impls}
    cpus = {key: [] for key in impls}
    losses = {}
    keys = list(impls)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            c0, t0 = _cpu_s(), time.perf_counter()
            losses[key] = impls[key].epoch(num_steps)
            walls[key].append(time.perf_counter() - t0)
            cpus[key].append(_cpu_s() - c0)
    return {'warmup_s': warmup, 'wall_s': walls, 'cpu_s': cpus, 'last_loss': losses}


def bench_workload(name: str, args, peak_gflops: float, rows: list) -> None:
    steps = args.steps.get(name, DEFAULT_STEPS[name])
    impls = {'jax': JaxTrainer(name)}
    if name == 'W3' and args.ynn_on:
        impls['jax_ynn_on'] = JaxTrainer(name, xla_default=True)
    if args.minimal:
        impls['jax_minimal'] = MinimalJaxTrainer(name)
    impls['torch_eager'] = TorchTrainer(name, compile=False, threads=args.threads)
    if args.torch_compile:
        try:
            impl = TorchTrainer(name, compile=True, threads=args.threads)
            start = time.perf_counter()
            impl.epoch(1)  # compiles; the untimed warm-up round then excludes most of it
            print(json.dumps({'workload': name, 'torch_compile_s': time.perf_counter() - start}))
            impls['torch_compile'] = impl
        except Exception as e:  # noqa: BLE001 - report it and go on without torch.compile
            print(json.dumps({'workload': name, 'torch_compile_error': repr(e)}), flush=True)
    result = time_rounds(impls, steps, args.repeats)
    flops = workloads.matmul_flops_per_step(name)
    floor_step = gemm_floor_s_per_step(name)
    medians = {key: float(np.median(t)) / steps for key, t in result['wall_s'].items()}
    for key, impl in impls.items():
        step_s = medians[key]
        _emit(
            {
                'workload': name,
                'description': workloads.WORKLOADS[name].description,
                'impl': impl.name,
                'key': key,
                'steps_per_round': steps,
                'batch_size': workloads.BATCH_SIZE,
                'images_per_s': workloads.BATCH_SIZE / step_s,
                's_per_epoch': step_s * STEPS_PER_EPOCH,
                'ms_per_step_all': [round(1e3 * t / steps, 3) for t in result['wall_s'][key]],
                'cpu_ms_per_step': 1e3 * float(np.median(result['cpu_s'][key])) / steps,
                'speedup_vs_torch_eager': medians['torch_eager'] / step_s,
                'speedup_vs_torch_compile': (
                    medians['torch_compile'] / step_s if 'torch_compile' in medians else None
                ),
                'warmup_s': result['warmup_s'][key],
                'matmul_gflop_per_step': flops / 1e9,
                'achieved_gemm_gflops': flops / step_s / 1e9,
                'fraction_of_gemm_peak': flops / step_s / 1e9 / peak_gflops,
                'gemm_floor_s_per_epoch': floor_step * STEPS_PER_EPOCH,
                'peak_floor_s_per_epoch': flops / (peak_gflops * 1e9) * STEPS_PER_EPOCH,
                'floor_over_time': floor_step / step_s,
                'last_loss': result['last_loss'][key],
                'threads': getattr(impl, 'threads', 'XLA default'),
            },
            rows,
        )


def bench_e1(args, rows: list) -> None:
    """E1 in child processes: jax over --e1_examples, the torch loop over --e1_torch_examples."""
    runs = [('jax', args.e1_examples, {})]
    if args.e1_torch_examples:
        runs.append(('torch', args.e1_torch_examples, {}))
    for impl, n, env in runs:
        cmd = [sys.executable, '-m', 'benchmarks.eval_nll_benchmark', '--impl', impl]
        cmd += ['--num_examples', str(n), '--k', str(args.e1_k), '--threads', str(args.threads)]
        out = subprocess.run(
            cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith('{')]
        if out.returncode or not lines:
            _emit({'workload': 'E1', 'impl': impl, 'error': out.stderr[-2000:]}, rows)
            continue
        row = json.loads(lines[-1])
        prefix = ' '.join(f'{k}="{v}"' for k, v in env.items())
        row['command'] = ' '.join(filter(None, [prefix, 'python', *cmd[1:]]))
        _emit(row, rows)


# ---------------------------------------------------------------------------------------------
# Report.


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return format(value * scale, spec) if isinstance(value, int | float) else '-'


def write_markdown(path: Path, meta: dict, rows: list) -> None:
    lines = [
        '# vae_jax vs PyTorch: training throughput (`make bench`)',
        '',
        f'`{meta["command"]}`, {meta["date"]}. {meta["machine"]}, {meta["cpus"]} CPUs; jax '
        f'{meta["jax"]}, torch {meta["torch"]}; XLA_FLAGS={meta["xla_flags"] or "(unset)"}.',
        f'Load average before / after: {meta["load_before"]} / {meta["load_after"]}.',
        '',
        f'- Threads: the process runs on {meta["cpus_used"]} CPU(s); torch.set_num_threads('
        f'{meta["threads"]}); XLA:CPU sizes its pool by the same CPUs.',
        f'- Batch 128, Adam, random binary 28x28x1 data. Median of {meta["repeats"]} interleaved '
        'timed rounds after one untimed round; s/epoch = median s/step x 468.',
        f'- Machine float32 GEMM peak ({GEMM_SIZE}^3): jnp.dot '
        f'{meta["gemm"]["jax_gflops"]["best"]:.0f}, torch.mm '
        f'{meta["gemm"]["torch_gflops"]["best"]:.0f} GFLOP/s -> {meta["peak_gflops"]:.0f}. '
        '"% of peak": the workload\'s GEMM FLOPs per second over that peak. "GEMM floor": its '
        'GEMMs each timed at its own shape; "floor/time": how close the implementation gets.',
        '',
        '| workload | implementation | images/s | s/epoch | vs torch eager | vs torch.compile '
        '| % of GEMM peak | GEMM floor s/epoch | floor / time |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        if r.get('workload') == 'E1' or 'images_per_s' not in r:
            continue
        ratio = f'{r["speedup_vs_torch_eager"]:.2f}x'
        if r['key'] in ('jax', 'jax_ynn_on'):
            ratio = f'**{ratio}**'
        lines.append(
            f'| {r["workload"]} | {r["impl"]} | {r["images_per_s"]:.0f} | '
            f'{r["s_per_epoch"]:.2f} | {ratio} | '
            f'{_fmt(r["speedup_vs_torch_compile"], ".2f")}x | '
            f'{100 * r["fraction_of_gemm_peak"]:.0f}% | {r["gemm_floor_s_per_epoch"]:.2f} | '
            f'{100 * r["floor_over_time"]:.0f}% |'
        )
    e1 = [r for r in rows if r.get('workload') == 'E1']
    if e1:
        lines += [
            '',
            '## E1: test NLL, k = 5000 importance samples (W1 model, random parameters)',
            '',
            '| implementation | examples | wall s | examples/s after the first batch | '
            'peak RSS MB (before eval) | command |',
            '|---|---:|---:|---:|---:|---|',
        ]
        for r in e1:
            if 'error' in r:
                lines.append(f'| {r["impl"]} | error: see JSON | | | | |')
                continue
            lines.append(
                f'| {r["impl"]} | {r["num_examples"]} | {r["wall_s"]:.1f} | '
                f'{_fmt(r.get("steady_examples_per_s"), ".1f")} | {r["peak_rss_mb"]:.0f} '
                f'({r["peak_rss_before_eval_mb"]:.0f}) | `{r["command"]}` |'
            )
    lines.append('')
    path.write_text('\n'.join(lines))


def _parse_steps(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(',')):
        key, value = item.split('=')
        out[key] = int(value)
    return out


def _machine() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workloads', default='W1,W2,W3,E1')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds per implementation')
    parser.add_argument('--steps', type=_parse_steps, default={}, help='steps per round: W1=200')
    parser.add_argument('--threads', type=int, default=2, help='CPUs and torch threads')
    parser.add_argument('--torch_compile', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        '--ynn_on',
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time W3 with XLA:CPU's default (YNNPACK) fusions",
    )
    parser.add_argument(
        '--minimal',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='also time the hand-written JAX/Flax loop of benchmarks/jax_minimal.py',
    )
    parser.add_argument('--e1_examples', type=int, default=workloads.NUM_TEST)
    parser.add_argument('--e1_torch_examples', type=int, default=200)
    parser.add_argument('--e1_k', type=int, default=5000)
    parser.add_argument('--out', default=str(Path(__file__).with_name('results.md')))
    args = parser.parse_args(argv)

    cpus = sorted(os.sched_getaffinity(0))
    if args.threads < len(cpus):
        os.sched_setaffinity(0, cpus[: args.threads])  # before any thread pool starts

    import jax
    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.workloads.split(',') if n]
    rows: list = []
    meta = {
        'command': 'python -m benchmarks.run '
        + ' '.join(argv if argv is not None else sys.argv[1:]),
        'date': datetime.datetime.now().isoformat(timespec='minutes'),
        'machine': _machine(),
        'cpus': os.cpu_count(),
        'cpus_used': len(os.sched_getaffinity(0)),
        'threads': args.threads,
        'jax': jax.__version__,
        'torch': torch.__version__,
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
        'repeats': args.repeats,
        'load_before': ' '.join(f'{x:.1f}' for x in os.getloadavg()),
    }
    meta['gemm'] = gemm_peak()
    meta['peak_gflops'] = max(v['best'] for v in meta['gemm'].values())
    print(json.dumps({'gemm_peak': meta['gemm'], 'machine_peak_gflops': meta['peak_gflops']}))
    for name in names:
        if name == 'E1':
            bench_e1(args, rows)
        else:
            bench_workload(name, args, meta['peak_gflops'], rows)
    meta['load_after'] = ' '.join(f'{x:.1f}' for x in os.getloadavg())
    write_markdown(Path(args.out), meta, rows)
    print(json.dumps({'wrote': args.out, 'load_after': meta['load_after']}), flush=True)


if __name__ == '__main__':
    main()
