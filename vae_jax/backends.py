"""Per-backend performance defaults: choices that were measured on one backend, not another.

Three choices in vae_jax exist only because of how XLA compiles for a given backend: how a
transposed convolution is computed, whether the steps of one jitted call are scanned or
unrolled, and how many steps one call runs. They are chosen here per backend, by measurement on
that backend; each entry says what was measured, or that it was not. (The XLA compiler options
are per backend too: `steps.compiler_options()`.)

CPU figures: XLA:CPU on a 2-core x86-64 machine, jax 0.10 (benchmarks/results.md and the
scripts beside it).
GPU: nothing has been measured yet; each GPU entry says 'unmeasured' and which default it takes
and why. `python -m benchmarks.run --backend gpu` (benchmarks/results_gpu.md) and
`python -m benchmarks.loop_sweep` are the measurements that should fill them in.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class BackendDefaults:
    """Performance defaults of one backend.

    Attributes:
      convt_implementation: `layers.conv_transpose`'s implementation for `convt` layers.
      loop: family ('dense' | 'conv') -> 'scan' | 'unroll', how one call's steps compile.
      steps_per_call: family -> optimizer steps per jitted call.
    """

    convt_implementation: str
    loop: dict[str, str]
    steps_per_call: dict[str, int]


BACKEND_DEFAULTS = {
    'cpu': BackendDefaults(
        # 'subpixel': XLA:CPU computes the weight gradient of lax.conv_transpose (an
        # lhs-dilated convolution) ~10x slower than the same product as stride-1 convolutions
        # of the sub-kernels (benchmarks/convt_grad.py); identical values and gradients.
        convt_implementation='subpixel',
        # Dense: one lax.scan over the chunk; ~1.25x faster than one jitted call per step on the
        # IWAE-paper MLP. Conv: convolution gradients inside a scan ran 3-30x slower than
        # outside a loop on XLA:CPU; 4 unrolled steps per call were fastest
        # (benchmarks/loop_sweep.py; scanning 4 steps made the conv VAE 4.6x slower).
        loop={'dense': 'scan', 'conv': 'unroll'},
        # Dense: 100-1,000 steps per call are within noise of each other; 100 keeps the host
        # responsive. Conv: 4 unrolled steps (more copies lengthen compilation for no gain).
        steps_per_call={'dense': 100, 'conv': 4},
    ),
    'gpu': BackendDefaults(
        # Unmeasured, default 'lax': the sub-pixel form works around an XLA:CPU slow path;
        # cuDNN runs transposed convolutions and their gradients natively.
        convt_implementation='lax',
        # Unmeasured, default 'scan' for both: unrolling worked around XLA:CPU's slow
        # convolution gradients inside loops; on a GPU a scan keeps compile time flat.
        loop={'dense': 'scan', 'conv': 'scan'},
        # Unmeasured, default 1,000 / 100: small steps are launch-bound on a GPU, so more steps
        # per call amortise the host round trip.
        steps_per_call={'dense': 1000, 'conv': 100},
    ),
}


def defaults(backend: str | None = None) -> BackendDefaults:
    """The defaults of `backend` (None: `jax.default_backend()`); 'cuda'/'rocm' count as 'gpu'.

    Raises:
      ValueError: for a backend without an entry (naming it and the known ones).
    """
    backend = backend or jax.default_backend()
    backend = 'gpu' if backend in ('cuda', 'rocm') else backend
    if backend not in BACKEND_DEFAULTS:
        raise ValueError(
            f'no performance defaults for backend {backend!r}; known: {sorted(BACKEND_DEFAULTS)}'
        )
    return BACKEND_DEFAULTS[backend]
