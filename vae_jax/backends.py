"""Per-backend performance defaults: choices that were measured on one backend, not another.

Four choices in vae_jax exist only because of how XLA compiles for a given backend: how a
transposed convolution is computed, whether the steps of one jitted call are scanned or
unrolled, how many steps one call runs, and which XLA compiler options the training call gets.
They are chosen here per backend (and model family), by measurement on that backend; each entry
says what was measured, or that it was not.

CPU figures: XLA:CPU on a 2-core x86-64 machine, jax 0.10 (benchmarks/results.md and the
scripts beside it).
GPU: nothing has been measured yet; each GPU entry says 'unmeasured' and which default it takes
and why. `python -m benchmarks.run --backend gpu` (benchmarks/results_gpu.md) and
`python -m benchmarks.loop_sweep` are the measurements that should fill them in.
TPU: nothing measured either; its entry is `XLA_DEFAULTS`.

Every backend starts. One without an entry (a PJRT plugin such as 'METAL', or a new platform
name) gets `XLA_DEFAULTS`: XLA's own conv-transpose, one scanned loop, XLA's compiler options;
`defaults` logs that once per backend name, so a run on it says at its start that nothing was
tuned there.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
from absl import logging

from vae_jax import layers


@dataclasses.dataclass(frozen=True)
class BackendDefaults:
    """Performance defaults of one backend.

    Attributes:
      convt_implementation: `layers.conv_transpose`'s implementation for `convt` layers.
      loop: family ('dense' | 'conv') -> 'scan' | 'unroll', how one call's steps compile.
      steps_per_call: family -> optimizer steps per jitted call.
      compiler_options: family -> `jax.jit(..., compiler_options=...)` of the training call
        (None: XLA's defaults).
    """

    convt_implementation: str
    loop: dict[str, str]
    steps_per_call: dict[str, int]
    compiler_options: dict[str, dict[str, str] | None]


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
        # YNNPACK library fusions off for conv models: W3 1.6-1.7x faster (and the k=5000 NLL
        # evaluation 2.1-2.2x). Dense models keep XLA's defaults: at the IWAE paper's batch 20
        # (W4-k5) turning YNNPACK off made the hand-written step 1.45x (fastest round) / 1.74x
        # (median) slower, and turning it back on made vae_jax's step 1.74x / 1.11x faster
        # (benchmarks/profile.md; loaded AMD EPYC machine). On an Intel Xeon 2-vCPU machine the
        # setting made no difference to the IWAE-paper step (k=1 480-540 vs 520-530 steps/s).
        # Evaluation keeps YNNPACK off for every family (`compiler_options()`).
        compiler_options={
            'dense': None,
            'conv': {'xla_cpu_experimental_ynn_fusion_type': ''},
        },
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
        # XLA's defaults (the YNNPACK option is XLA:CPU's).
        compiler_options={'dense': None, 'conv': None},
    ),
}

# A backend nothing was measured on: XLA's own choices. 'lax' is XLA's transposed convolution
# (the sub-pixel form only works around an XLA:CPU slow path); 'scan' keeps compile time flat
# in the number of steps per call (unrolling only worked around XLA:CPU's slow convolution
# gradients inside loops); 1,000 / 100 steps per call as on a GPU, which amortise the host
# round trip of an accelerator; no compiler options.
XLA_DEFAULTS = BackendDefaults(
    convt_implementation='lax',
    loop={'dense': 'scan', 'conv': 'scan'},
    steps_per_call={'dense': 1000, 'conv': 100},
    compiler_options={'dense': None, 'conv': None},
)
# Unmeasured: XLA's defaults, named explicitly so that a TPU run does not log a fallback.
BACKEND_DEFAULTS['tpu'] = XLA_DEFAULTS

_warned: set[str] = set()  # backends whose fallback to XLA_DEFAULTS was logged


def defaults(backend: str | None = None) -> BackendDefaults:
    """The defaults of `backend` (None: `jax.default_backend()`); 'cuda'/'rocm' count as 'gpu'.

    A backend without an entry gets `XLA_DEFAULTS`, logged (absl, warning) the first time it is
    asked for; never an error.
    """
    backend = backend or jax.default_backend()
    backend = 'gpu' if backend in ('cuda', 'rocm') else backend
    if backend in BACKEND_DEFAULTS:
        return BACKEND_DEFAULTS[backend]
    if backend not in _warned:
        _warned.add(backend)
        logging.warning(
            "backend %r has no measured performance defaults (measured: %s); using XLA's "
            "defaults: conv-transpose 'lax', scanned steps, no compiler options "
            '(vae_jax/backends.py)',
            backend,
            ', '.join(sorted(BACKEND_DEFAULTS)),
        )
    return XLA_DEFAULTS


# XLA options for vae_jax's jitted training and evaluation calls on XLA:CPU: its YNNPACK
# library fusions off (XLA's own emitters instead). Measured in `make bench` runs
# (benchmarks/results.md): conv VAE training (W3) 1.6-1.7x faster, the k=5000 NLL evaluation
# (E1) 2.1-2.2x faster, the dense training workloads unchanged. Not applied on other backends.
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def compiler_options(family: str | None = None) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for this backend (call after the backend is set up).

    Args:
      family: the trained model's family ('dense' | 'conv', see `model_family`) for a training
        call: its per-backend setting (`BACKEND_DEFAULTS`; on XLA:CPU the YNNPACK fusions stay
        on for dense models, where turning them off made the IWAE-paper step up to 1.7x
        slower). None for evaluation, which keeps them off on XLA:CPU (the k=5000 NLL 2.1-2.2x
        faster).
    """
    if family is not None:
        options = defaults().compiler_options[family]
        return None if options is None else dict(options)
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == 'cpu' else None


_CONV_KINDS = ('conv', 'convt', 'maxpool', 'upsample')


def model_family(config: ml_collections.ConfigDict) -> str:
    """'conv' when the config's layer specs have convolution layers, else 'dense'.

    A model of one's own (`model.module`) counts as 'dense': its layers are not known here.
    """
    if config.model.get('module'):
        return 'dense'
    specs = (config.model.encoder, config.model.decoder)
    kinds = {
        spec.kind
        for text, key in zip(specs, ('model.encoder', 'model.decoder'), strict=True)
        for spec in layers.parse_spec(text, key, allow_out=True)
    }
    return 'conv' if kinds & set(_CONV_KINDS) else 'dense'
