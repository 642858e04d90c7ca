"""vae_jax's training path against a PyTorch reference, side by side in one run (`make bench`).

    python -m benchmarks.run                      # everything, writes benchmarks/results.md
    python -m benchmarks.run --workloads W1,W3 --repeats 3 --no-torch_compile
    python -m benchmarks.run --backend gpu        # on a GPU: writes benchmarks/results_gpu.md

Workloads (benchmarks/workloads.py): W1 IWAE-paper MLP k=1, W2 the same with the IWAE k=50 bound,
W3 a conv VAE, batch 128, Adam, random binary MNIST-shaped data; W4-k1/k5/k50 the IWAE paper's
protocol step (the same MLP, batch 20, dynamic binarisation of grey images), reported also as
hours for the paper's 3,280 passes x 3,000 steps. E1: the k=5000 test NLL over 10,000 images
(`benchmarks/eval_nll_benchmark.py`, in child processes so that each peak memory is its own).

`--backend gpu` runs every workload at batch 128 and at the paper's batch 20 (`--batch_sizes`),
torch on CUDA (eager and `torch.compile`), JAX on its default (GPU) backend, without the CPU's
thread pinning and GEMM floors, and writes `benchmarks/results_gpu.md` with the GPU, driver and
versions.

What is timed:
- jax: `trainer.Run(config).chunk_fn`, called exactly as `trainer.train_and_evaluate` calls it
  (device-resident data, `steps_per_call` steps per call, donated state, one `device_get` of the
  metric sums per call), with the workload config's own `loop` / `steps_per_call`.
- torch: `benchmarks/torch_reference.py`, eager and (unless --no-torch_compile) `torch.compile`.
- hand-written JAX (unless --no-minimal): `benchmarks/jax_minimal.py`, the fastest plain JAX
  loop of the same models we could write (the batch as one array, one noise draw per step,
  closed-form losses, hand-fused Adam, long scanned chunks): the yardstick; vae_jax's price for
  its generality is its time over this one's.
- W3 also (unless --no-ynn_on) "jax, YNNPACK on": the same trainer function compiled with XLA's
  default options. vae_jax itself compiles with `backends.compiler_options()` (on XLA:CPU, YNNPACK
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
DEFAULT_STEPS = {'W1': 200, 'W2': 20, 'W3': 24, 'W4-k1': 1000, 'W4-k5': 500, 'W4-k50': 100}
GPU_DEFAULT_STEPS = 500  # per round, every workload: short launch-bound steps
DEFAULT_WORKLOADS = 'W1,W2,W3,W4-k1,W4-k5,W4-k50,E1'


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
    donated arguments) is jitted again without vae_jax's `backends.compiler_options()`.
    """

    def __init__(
        self,
        workload: str,
        *,
        loop: str | None = None,
        steps_per_call: int | None = None,
        xla_default: bool = False,
        batch_size: int | None = None,
    ):
        import jax
        import jax.numpy as jnp

        from vae_jax import trainer

        self._jax = jax
        config = workloads.get_config(workload, loop=loop, steps_per_call=steps_per_call)
        if batch_size:
            config.input.batch_size = batch_size
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
        self.train_images, self.train_labels = run.device_split()  # As the trainer puts it.
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
    """`jax_minimal.Trainer`, the hand-written JAX loop, with its own steps per call."""

    def __init__(self, workload: str, *, batch_size: int | None = None):
        from benchmarks import jax_minimal

        self.trainer = jax_minimal.Trainer(workload, batch_size=batch_size)
        self.name = self.trainer.name

    def epoch(self, num_steps: int) -> float:
        return self.trainer.epoch(num_steps)


class TorchTrainer:
    """`torch_reference.Trainer`, with its intra-op thread count set before every round."""

    def __init__(
        self,
        workload: str,
        *,
        compile: bool,
        threads: int,
        batch_size: int | None = None,
        device: str = 'cpu',
    ):
        from benchmarks import torch_reference

        self.trainer = torch_reference.Trainer(
            workload, compile=compile, batch_size=batch_size, device=device
        )
        self.threads = threads
        where = f'{threads} threads' if device == 'cpu' else device
        self.name = ('torch.compile' if compile else 'torch eager') + f' ({where})'

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


def gemm_floor_s_per_step(name: str, batch: int | None = None, repeats: int = 5) -> float:
    """Sum over the workload's GEMMs of the faster of jnp.dot / torch.mm at each shape (medians)."""
    cache: dict = {}
    total = 0.0
    for shape in workloads.gemm_shapes(name, batch):
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


def _ratio(medians: dict, key: str, step_s: float) -> float | None:
    return medians[key] / step_s if key in medians else None


def bench_workload(
    name: str, batch: int | None, args, peak_gflops: float | None, rows: list
) -> None:
    """Times every implementation of workload `name` at `batch` (None: the workload's own)."""
    batch = batch or workloads.WORKLOADS[name].batch_size
    gpu = args.backend == 'gpu'
    steps = args.steps.get(name, GPU_DEFAULT_STEPS if gpu else DEFAULT_STEPS[name])
    device = 'cuda' if gpu else 'cpu'
    impls = {'jax': JaxTrainer(name, batch_size=batch)}
    if name == 'W3' and args.ynn_on and not gpu:
        impls['jax_ynn_on'] = JaxTrainer(name, xla_default=True, batch_size=batch)
    if args.minimal:
        impls['jax_minimal'] = MinimalJaxTrainer(name, batch_size=batch)
    torch_args = dict(threads=args.threads, batch_size=batch, device=device)
    impls['torch_eager'] = TorchTrainer(name, compile=False, **torch_args)
    if args.torch_compile:
        try:
            impl = TorchTrainer(name, compile=True, **torch_args)
            start = time.perf_counter()
            impl.epoch(1)  # compiles; the untimed warm-up round then excludes most of it
            print(json.dumps({'workload': name, 'torch_compile_s': time.perf_counter() - start}))
            impls['torch_compile'] = impl
        except Exception as e:  # noqa: BLE001 - report it and go on without torch.compile
            print(json.dumps({'workload': name, 'torch_compile_error': repr(e)}), flush=True)
    result = time_rounds(impls, steps, args.repeats)
    flops = workloads.matmul_flops_per_step(name, batch)
    floor_step = None if gpu else gemm_floor_s_per_step(name, batch)
    medians = {key: float(np.median(t)) / steps for key, t in result['wall_s'].items()}
    steps_per_epoch = workloads.NUM_TRAIN // batch
    for key, impl in impls.items():
        step_s = medians[key]
        row = {
            'workload': name,
            'description': workloads.WORKLOADS[name].description,
            'backend': args.backend,
            'impl': impl.name,
            'key': key,
            'steps_per_round': steps,
            'batch_size': batch,
            'images_per_s': batch / step_s,
            'ms_per_step': 1e3 * step_s,
            's_per_epoch': step_s * steps_per_epoch,
            # The IWAE paper's schedule (3,280 passes at batch 20), at this row's step time.
            'paper_schedule_hours': (
                step_s * workloads.PAPER_STEPS / 3600 if batch == 20 else None
            ),
            'ms_per_step_all': [round(1e3 * t / steps, 3) for t in result['wall_s'][key]],
            'cpu_ms_per_step': 1e3 * float(np.median(result['cpu_s'][key])) / steps,
            'speedup_vs_torch_eager': _ratio(medians, 'torch_eager', step_s),
            'speedup_vs_torch_compile': _ratio(medians, 'torch_compile', step_s),
            'speedup_vs_hand_written_jax': _ratio(medians, 'jax_minimal', step_s),
            'warmup_s': result['warmup_s'][key],
            'matmul_gflop_per_step': flops / 1e9,
            'achieved_gemm_gflops': flops / step_s / 1e9,
            'last_loss': result['last_loss'][key],
            'threads': getattr(impl, 'threads', 'XLA default'),
        }
        if peak_gflops:
            row['fraction_of_gemm_peak'] = flops / step_s / 1e9 / peak_gflops
            row['peak_floor_s_per_epoch'] = flops / (peak_gflops * 1e9) * steps_per_epoch
        if floor_step is not None:
            row['gemm_floor_s_per_epoch'] = floor_step * steps_per_epoch
            row['floor_over_time'] = floor_step / step_s
        _emit(row, rows)


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


def _x(value) -> str:
    return f'{value:.2f}x' if isinstance(value, int | float) else '-'


def write_markdown(path: Path, meta: dict, rows: list) -> None:
    gpu = meta['backend'] == 'gpu'
    title = 'vae_jax vs PyTorch on a GPU' if gpu else 'vae_jax vs PyTorch'
    lines = [
        f'# {title}: training throughput (`make bench`)',
        '',
        f'`{meta["command"]}`, {meta["date"]}. {meta["machine"]}, {meta["cpus"]} CPUs; jax '
        f'{meta["jax"]}, torch {meta["torch"]}; XLA_FLAGS={meta["xla_flags"] or "(unset)"}.',
    ]
    if gpu:
        lines.append(
            f'GPU: {meta["gpu"]}; driver {meta["driver"]}; JAX devices: {meta["devices"]}.'
        )
    lines += [
        f'Load average before / after: {meta["load_before"]} / {meta["load_after"]}.',
        '',
    ]
    if not gpu:
        lines += [
            f'- Threads: the process runs on {meta["cpus_used"]} CPU(s); torch.set_num_threads('
            f'{meta["threads"]}); XLA:CPU sizes its pool by the same CPUs.',
        ]
    lines += [
        f'- Adam, random MNIST-shaped data. Median of {meta["repeats"]} interleaved timed rounds '
        'after one untimed round; s/epoch = median s/step x (60,000 / batch). "vs hand-written": '
        "the hand-written JAX loop's time over this row's (vae_jax's target: >= 0.95x). "
        '"hours": the IWAE paper\'s 3,280 passes x 3,000 steps at this step time (batch 20).',
    ]
    if not gpu:
        lines.append(
            f'- Machine float32 GEMM peak ({GEMM_SIZE}^3): jnp.dot '
            f'{meta["gemm"]["jax_gflops"]["best"]:.0f}, torch.mm '
            f'{meta["gemm"]["torch_gflops"]["best"]:.0f} GFLOP/s -> {meta["peak_gflops"]:.0f}. '
            '"% of peak": the workload\'s GEMM FLOPs per second over that peak. "GEMM floor": its '
            'GEMMs each timed at its own shape; "floor/time": how close the implementation gets.'
        )
    lines += [
        '',
        '| workload | batch | implementation | images/s | ms/step | s/epoch | hours (3,280 passes) '
        '| vs hand-written JAX | vs torch eager | vs torch.compile | % of GEMM peak '
        '| GEMM floor s/epoch | floor / time |',
        '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        if r.get('workload') == 'E1' or 'images_per_s' not in r:
            continue
        ratio = _x(r['speedup_vs_hand_written_jax'])
        if r['key'] in ('jax', 'jax_ynn_on'):
            ratio = f'**{ratio}**'
        peak = r.get('fraction_of_gemm_peak')
        lines.append(
            f'| {r["workload"]} | {r["batch_size"]} | {r["impl"]} | {r["images_per_s"]:.0f} | '
            f'{r["ms_per_step"]:.3f} | {r["s_per_epoch"]:.2f} | '
            f'{_fmt(r["paper_schedule_hours"], ".1f")} | {ratio} | '
            f'{_x(r["speedup_vs_torch_eager"])} | {_x(r["speedup_vs_torch_compile"])} | '
            f'{_fmt(peak, ".0f", 100)}{"%" if peak else ""} | '
            f'{_fmt(r.get("gemm_floor_s_per_epoch"), ".2f")} | '
            f'{_fmt(r.get("floor_over_time"), ".0f", 100)}{"%" if "floor_over_time" in r else ""} |'
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


def _gpu_meta() -> dict:
    import jax
    import torch

    try:
        driver = subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        driver = f'unknown ({e})'
    return {
        'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (torch)',
        'driver': driver,
        'devices': ', '.join(str(d) for d in jax.devices()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backend', choices=('cpu', 'gpu'), default='cpu')
    parser.add_argument('--workloads', default=DEFAULT_WORKLOADS)
    parser.add_argument(
        '--batch_sizes',
        default=None,
        help="comma-separated, each workload at each; default: the workload's own on cpu, "
        '128,20 on gpu',
    )
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
        help='also time the hand-written JAX loop of benchmarks/jax_minimal.py',
    )
    parser.add_argument('--e1_examples', type=int, default=workloads.NUM_TEST)
    parser.add_argument('--e1_torch_examples', type=int, default=None, help='default 200; gpu 0')
    parser.add_argument('--e1_k', type=int, default=5000)
    parser.add_argument('--out', default=None, help='default results.md / results_gpu.md')
    args = parser.parse_args(argv)
    gpu = args.backend == 'gpu'
    out = args.out or str(Path(__file__).with_name('results_gpu.md' if gpu else 'results.md'))
    if args.e1_torch_examples is None:
        args.e1_torch_examples = 0 if gpu else 200  # the torch E1 loop runs on the CPU
    batches = [int(b) for b in (args.batch_sizes or ('128,20' if gpu else '0')).split(',')]
    names = [n for n in args.workloads.split(',') if n]
    for name in names:
        if name != 'E1' and name not in workloads.WORKLOADS:
            raise ValueError(
                f'--workloads: unknown workload {name!r}; allowed: {[*workloads.WORKLOADS, "E1"]}'
            )

    if gpu:
        # JAX and torch share the GPU in one process: JAX must not take 75% of it up front.
        os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    cpus = sorted(os.sched_getaffinity(0))
    if not gpu and args.threads < len(cpus):
        os.sched_setaffinity(0, cpus[: args.threads])  # before any thread pool starts

    import jax
    import torch

    if gpu and (jax.default_backend() != 'gpu' or not torch.cuda.is_available()):
        raise ValueError(
            f'--backend gpu: JAX runs on {jax.default_backend()!r} and torch.cuda.is_available() '
            f'is {torch.cuda.is_available()}; both must see the GPU'
        )
    torch.set_num_threads(args.threads)
    rows: list = []
    meta = {
        'backend': args.backend,
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
    peak = None
    if gpu:
        meta.update(_gpu_meta())
    else:
        meta['gemm'] = gemm_peak()
        meta['peak_gflops'] = peak = max(v['best'] for v in meta['gemm'].values())
        print(json.dumps({'gemm_peak': meta['gemm'], 'machine_peak_gflops': peak}))
    for name in names:
        if name == 'E1':
            bench_e1(args, rows)
            continue
        for batch in batches:
            bench_workload(name, batch or None, args, peak, rows)
    meta['load_after'] = ' '.join(f'{x:.1f}' for x in os.getloadavg())
    write_markdown(Path(out), meta, rows)
    print(json.dumps({'wrote': out, 'load_after': meta['load_after']}), flush=True)


if __name__ == '__main__':
    main()
