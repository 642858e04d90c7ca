"""The benchmark workloads: configs for vae_jax's own training path, random data, FLOP counts.

W1  IWAE-paper MLP 784-200-200-50 (tanh both ways), objective iwae with k = 1 (the paper's VAE).
W2  the same model, IWAE bound with k = 50.
W3  conv VAE: encoder conv(32,3x3,s2)-relu-conv(64,3x3,s2)-relu-flatten + Dense(2 x 16), decoder
    dense(3136)-relu-reshape(7,7,64)-convt(64,3x3,s2)-relu-convt(32,3x3,s2)-relu-conv(1,3x3);
    ELBO with the analytic KL.
W1-W3: random binary MNIST-shaped data [N, 28, 28, 1] (no binarisation in the step), batch 128,
Adam (lr 1e-3, constant, eps 1e-8), Bernoulli logits, diagonal Gaussian posterior, N(0, I) prior.
W4  the IWAE paper's protocol step (configs/iwae_mnist.py unchanged but for the data): the W1
    model, batch 20, grey images binarised afresh in every step (dynamic binarisation), Adam
    eps 1e-4 with the paper's stage schedule, IWAE bound at k = 1, 5, 50 ('W4-k1', 'W4-k5',
    'W4-k50'). Its figure of merit is ms/step and hours for the paper's 3,280 passes x 3,000
    steps.

The configs start from the project's own files (configs/iwae_mnist.py, vae_jax/config.py), so the
benchmark times what `python -m vae_jax.train` runs; only the data source is replaced (see
`random_data`). vae_jax holds the random images as it holds real data (bool for the binary ones,
uint8 for W4's grey ones) and converts each batch in its step; the hand-written references hold
the same values as float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import ml_collections
import numpy as np

from configs import iwae_mnist
from vae_jax import backends, data
from vae_jax import config as schema

BATCH_SIZE = 128
NUM_TRAIN = 60_000
NUM_TEST = 10_000
IMAGE_SHAPE = (28, 28, 1)
PIXEL_MEAN = 0.13  # about MNIST's share of ink


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    description: str
    family: str  # 'dense' | 'conv'
    k_samples: int
    batch_size: int = 128
    dynamic_binarize: bool = False
    adam_eps: float = 1e-8


WORKLOADS = {
    'W1': Workload('W1', 'IWAE-paper MLP 784-200-200-50 tanh, k=1', 'dense', 1),
    'W2': Workload('W2', 'IWAE-paper MLP 784-200-200-50 tanh, IWAE k=50', 'dense', 50),
    'W3': Workload('W3', 'conv VAE (2 conv / 2 convT + conv), latent 16, ELBO', 'conv', 1),
    **{
        f'W4-k{k}': Workload(
            f'W4-k{k}',
            f'IWAE-paper protocol step: MLP, batch 20, dynamic binarisation, IWAE k={k}',
            'dense',
            k,
            batch_size=20,
            dynamic_binarize=True,
            adam_eps=1e-4,
        )
        for k in (1, 5, 50)
    },
}
# The IWAE paper's schedule: 3,280 passes over 60,000 images at batch 20.
PAPER_STEPS = 3_280 * 3_000


def loop_settings(family: str) -> tuple[str, int]:
    """(loop, steps_per_call) of a model family ('dense' | 'conv') on the default backend.

    From `vae_jax.backends` (measured with benchmarks/loop_sweep.py on CPU; GPU unmeasured).
    """
    d = backends.defaults()
    return d.loop[family], d.steps_per_call[family]


CONV_ENCODER = 'conv(32,3x3,s2)-relu-conv(64,3x3,s2)-relu-flatten'
CONV_DECODER = (
    'dense(3136)-relu-reshape(7,7,64)-convt(64,3x3,s2)-relu-convt(32,3x3,s2)-relu-conv(out,3x3)'
)


def get_config(name: str, *, loop: str | None = None, steps_per_call: int | None = None):
    """The vae_jax config of workload `name` ('W1' | 'W2' | 'W3').

    `loop` / `steps_per_call` default to `loop_settings` of the workload's model family.
    """
    workload = WORKLOADS[name]
    if workload.dynamic_binarize:  # W4: the reproduction's own config, data aside
        c = iwae_mnist.get_config()
        c.k_samples = workload.k_samples
        c.loop = loop or 'scan'
        c.steps_per_call = steps_per_call or c.steps_per_call
        c.input.pipeline = 'device'  # the random data are in memory (`random_data`): no files
        return c
    if workload.family == 'dense':
        c = iwae_mnist.get_config()  # model, posterior ('exp' scale), likelihood, Adam
        c.objective = 'iwae'
        c.k_samples = workload.k_samples
    else:
        c = schema.get_config()
        c.objective = 'elbo'
        c.analytic_kl = True
        c.model.latent_dim = 16
        c.model.encoder = CONV_ENCODER
        c.model.decoder = CONV_DECODER
        c.model.posterior = 'diagonal'
        c.model.scale_transform = 'exp'
        c.model.likelihood = 'bernoulli'
    c.input.dataset = 'mnist'  # shape and label metadata; the pixels come from `random_data`
    c.input.binarize = 'none'
    c.input.pipeline = 'device'  # the random data are in memory (`random_data`): no files
    c.input.batch_size = BATCH_SIZE
    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    c.optim.schedule = 'constant'
    c.optim.warmup_steps = 0
    c.optim.eps = 1e-8
    c.num_train_steps = 10**9
    default_loop, default_steps = loop_settings(workload.family)
    c.loop = loop or default_loop
    c.steps_per_call = steps_per_call or default_steps
    return c


def random_images(num: int, seed: int) -> np.ndarray:
    """Binary MNIST-shaped images: float32 [num, 28, 28, 1] in {0, 1} (`stored_images` as float)."""
    return stored_images(num, seed, grey=False).astype(np.float32)


def random_grey_images(num: int, seed: int) -> np.ndarray:
    """Grey MNIST-shaped images for dynamic binarisation: float32 [num, 28, 28, 1] in [0, 1].

    About MNIST's share of ink, with intermediate values on the strokes' edges; the values are
    k / 255, `stored_images` scaled as vae_jax scales uint8 data.
    """
    return stored_images(num, seed, grey=True).astype(np.float32) / np.float32(255)


def stored_images(num: int, seed: int, *, grey: bool) -> np.ndarray:
    """The random images as vae_jax holds data in memory: bool [num, 28, 28, 1] for binary
    images, uint8 0..255 for grey ones (the float32 images above are these, converted)."""
    rng = np.random.default_rng(seed)
    ink = rng.random((num, *IMAGE_SHAPE), dtype=np.float32) < PIXEL_MEAN
    if not grey:
        return ink
    level = rng.uniform(0.3, 1.0, (num, *IMAGE_SHAPE))
    return np.round(ink * level * 255).astype(np.uint8)


def train_images(name: str) -> np.ndarray:
    """The training images of workload `name`: [N, 28, 28, 1] float32."""
    if WORKLOADS[name].dynamic_binarize:
        return random_grey_images(NUM_TRAIN, 0)
    return random_images(NUM_TRAIN, 0)


def _random_datasets(input_config: ml_collections.ConfigDict, likelihood: str | None = None):
    # As data.get_datasets returns them: stored (bool / uint8), converted in vae_jax's step.
    grey = input_config.binarize == 'dynamic'
    split = lambda n, seed: {
        'image': stored_images(n, seed, grey=grey),
        'label': np.zeros((n,), np.int32),
    }
    return split(NUM_TRAIN, 0), split(NUM_TEST, 1)


@contextlib.contextmanager
def random_data():
    """Within this context, `data.get_datasets` (what `trainer.Run` calls) returns random data."""
    with mock.patch.object(data, 'get_datasets', _random_datasets):
        yield


# ---------------------------------------------------------------------------------------------
# The matrix products (GEMMs and convolutions as GEMMs) of one optimizer step.


def _gemms(m: int, k: int, n: int, *, input_grad: bool = True) -> list[tuple[int, int, int]]:
    """A [m, k] x [k, n] product's forward, weight-gradient and (optional) input-gradient GEMMs.

    Each entry is (rows, contraction, columns): forward (m, k, n); weight gradient (k, m, n), the
    contraction over the m rows; input gradient (m, n, k).
    """
    return [(m, k, n), (k, m, n)] + ([(m, n, k)] if input_grad else [])


def gemm_shapes(name: str, batch: int | None = None) -> list[tuple[int, int, int]]:
    """The GEMMs of one training step of workload `name`, forward and backward.

    Dense layers are [batch, in] x [in, out]. A 3x3 convolution is its im2col GEMM
    [batch * H_out * W_out, 9 * C_in] x [9 * C_in, C_out]; a stride-2 transposed convolution is
    the transpose of a strided one, [batch * H_in * W_in, C_in] x [C_in, 9 * C_out] (its useful
    products only, no multiplications by inserted zeros). No input gradient for the first layer
    (the data needs none).

    Returns:
      [(m, k, n)] with 2 * m * k * n FLOPs each.
    """
    workload = WORKLOADS[name]
    batch = batch or workload.batch_size
    if workload.family == 'dense':
        bk = batch * workload.k_samples  # the decoder sees k samples per example
        return [
            *_gemms(batch, 784, 200, input_grad=False),
            *_gemms(batch, 200, 200),
            *_gemms(batch, 200, 100),
            *_gemms(bk, 50, 200),
            *_gemms(bk, 200, 200),
            *_gemms(bk, 200, 784),
        ]
    return [
        *_gemms(batch * 14 * 14, 9 * 1, 32, input_grad=False),  # conv 28x28x1 -> 14x14x32
        *_gemms(batch * 7 * 7, 9 * 32, 64),  # conv -> 7x7x64
        *_gemms(batch, 3136, 32),  # dense head (2 x 16)
        *_gemms(batch, 16, 3136),  # decoder dense
        *_gemms(batch * 7 * 7, 64, 9 * 64),  # convT 7x7x64 -> 14x14x64
        *_gemms(batch * 14 * 14, 64, 9 * 32),  # convT -> 28x28x32
        *_gemms(batch * 28 * 28, 9 * 32, 1),  # conv -> 28x28x1 logits
    ]


def matmul_flops_per_step(name: str, batch: int | None = None) -> int:
    """FLOPs of the matrix products of one training step (forward and backward)."""
    return sum(2 * m * k * n for m, k, n in gemm_shapes(name, batch))
