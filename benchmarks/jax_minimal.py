"""The fastest hand-written JAX loop of each benchmark workload: the yardstick for vae_jax.

What a researcher who knows JAX would write in one file without vae_jax, tuned for speed:
- the data lives on the device, and one jitted call runs a long chunk of steps (a `lax.scan`
  over the batches' indices; the conv model unrolls a few steps per call instead, because
  XLA:CPU runs convolution gradients inside a scan far slower);
- the batch goes through the network as one array (no per-example `vmap` or closures);
- one PRNG key per step, `fold_in(key, t)`, and one normal draw per step for the whole batch
  (plus one uniform draw for dynamic binarisation, W4);
- the losses in closed form: the Bernoulli log-likelihood as -(max(l, 0) - l x +
  log1p(exp(-|l|))) (one exp, one log1p per pixel), Gaussian log-densities written out, no
  distribution objects; nothing is logged but the loss;
- Adam hand-fused: one elementwise expression per parameter leaf for the two moments and the
  update (XLA fuses it into one loop), bias corrections computed once per step as scalars;
- the train state donated to each call.
The dense models are plain `jnp.dot` layers. The conv model's transposed convolutions use the
sub-pixel form of `vae_jax.layers.conv_transpose` (a pure function): Flax's `ConvTranspose`
weight gradient is ~10x slower on XLA:CPU, and the yardstick should not lose to a known trick.
The conv model is compiled with XLA:CPU's YNNPACK fusions off, for the same reason (an XLA
option any user can set; `vae_jax.steps.CPU_COMPILER_OPTIONS`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import workloads
from vae_jax import layers

LOG_2PI = math.log(2 * math.pi)
# XLA:CPU's YNNPACK library fusions off (the same option vae_jax sets on CPU).
CPU_CONV_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


class DenseVAE(nn.Module):
    """784-200-200-(2x50) tanh encoder, 50-200-200-784 tanh decoder (Burda et al. 2016)."""

    latent: int = 50

    def setup(self):
        self.enc = [nn.Dense(200), nn.Dense(200), nn.Dense(2 * self.latent)]
        self.dec = [nn.Dense(200), nn.Dense(200), nn.Dense(784)]

    def encode(self, x):  # [..., 784] or [..., 28, 28, 1] -> loc, log_scale [..., D]
        h = x.reshape(*x.shape[:-3], 784) if x.shape[-3:] == (28, 28, 1) else x
        h = jnp.tanh(self.enc[0](h))
        h = jnp.tanh(self.enc[1](h))
        return jnp.split(self.enc[2](h), 2, axis=-1)

    def decode(self, z):  # [..., D] -> logits [..., 784]
        h = jnp.tanh(self.dec[0](z))
        h = jnp.tanh(self.dec[1](h))
        return self.dec[2](h)

    def __call__(self, x, z):
        return self.encode(x), self.decode(z)


class _ConvTranspose(nn.Module):
    """3x3 stride-2 'SAME' transposed convolution, computed in the sub-pixel form."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            'kernel', nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param('bias', nn.initializers.zeros, (self.features,))
        return layers.conv_transpose(x, kernel, (2, 2), 'SAME') + bias


class ConvVAE(nn.Module):
    """The W3 conv VAE (NHWC)."""

    latent: int = 16

    def setup(self):
        self.c1 = nn.Conv(32, (3, 3), (2, 2))
        self.c2 = nn.Conv(64, (3, 3), (2, 2))
        self.head = nn.Dense(2 * self.latent)
        self.d0 = nn.Dense(7 * 7 * 64)
        self.t1 = _ConvTranspose(64)
        self.t2 = _ConvTranspose(32)
        self.out = nn.Conv(1, (3, 3))

    def encode(self, x):  # [B, 28, 28, 1] -> loc, log_scale [B, D]
        h = nn.relu(self.c2(nn.relu(self.c1(x))))
        return jnp.split(self.head(h.reshape(h.shape[0], -1)), 2, axis=-1)

    def decode(self, z):  # [B, D] -> logits [B, 784]
        h = nn.relu(self.d0(z)).reshape(z.shape[0], 7, 7, 64)
        h = nn.relu(self.t2(nn.relu(self.t1(h))))
        return self.out(h).reshape(z.shape[0], -1)

    def __call__(self, x, z):
        return self.encode(x), self.decode(z)


def bernoulli_nll(logits, x):
    """-log Bernoulli(x | sigmoid(l)) per pixel, stable: max(l, 0) - l x + log1p(exp(-|l|)).

    -|l| is min(l, -l): the same value, and the right gradient at l = 0 (JAX's abs has slope 1
    there).
    """
    return jnp.maximum(logits, 0.0) - logits * x + jnp.log1p(jnp.exp(jnp.minimum(logits, -logits)))


def dense_loss(params, model, key, x, k):
    """Mean over the batch of -IWAE_k (k = 1: the one-sample Monte-Carlo ELBO).

    Args:
      params: the DenseVAE variables.
      model: the DenseVAE.
      key: one normal draw of [k, B, D].
      x: [B, 28, 28, 1] or [B, 784] in {0, 1}.
      k: number of importance samples (static).

    Returns:
      [] the loss.
    """
    x = x.reshape(x.shape[0], -1)
    loc, log_scale = model.apply(params, x, method=DenseVAE.encode)
    eps = jax.random.normal(key, (k, *loc.shape))
    z = loc + jnp.exp(log_scale) * eps  # [K, B, D]
    logits = model.apply(params, z, method=DenseVAE.decode)  # [K, B, 784]
    log_px = -jnp.sum(bernoulli_nll(logits, x), -1)  # [K, B]
    # log p(z) - log q(z|x): the -0.5 log(2 pi) terms cancel; q's standardised sample is eps.
    log_pz_qz = jnp.sum(0.5 * (eps**2 - z**2) + log_scale, -1)
    log_w = log_px + log_pz_qz
    if k == 1:
        return -jnp.mean(log_w)
    return -jnp.mean(jax.nn.logsumexp(log_w, axis=0) - math.log(k))


def conv_loss(params, model, key, x):
    """Mean over the batch of the negative ELBO with the analytic KL; x [B, 28, 28, 1]."""
    loc, log_scale = model.apply(params, x, method=ConvVAE.encode)
    z = loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)
    logits = model.apply(params, z, method=ConvVAE.decode)
    recon = jnp.sum(bernoulli_nll(logits, x.reshape(x.shape[0], -1)), -1)
    kl = 0.5 * jnp.sum(loc**2 + jnp.exp(2 * log_scale) - 1 - 2 * log_scale, -1)
    return jnp.mean(recon + kl)


def adam_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return zeros, jax.tree.map(jnp.zeros_like, params)


def adam_update(params, grads, mu, nu, t, *, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step (optax.adam's arithmetic), one fused elementwise pass per leaf.

    Args:
      params, grads, mu, nu: pytrees of the same structure.
      t: [] int32, the number of steps taken before this one.

    Returns:
      (params, mu, nu) after the step.
    """
    count = (t + 1).astype(jnp.float32)
    c1 = 1 - b1**count
    c2 = 1 - b2**count

    def leaf(p, g, m, v):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g * g)
        return p - learning_rate * (m / c1) / (jnp.sqrt(v / c2) + eps), m, v

    out = jax.tree.map(leaf, params, grads, mu, nu)
    treedef = jax.tree.structure(params)
    leaves = zip(*treedef.flatten_up_to(out), strict=True)
    p, m, v = (jax.tree.unflatten(treedef, x) for x in leaves)
    return p, m, v


class Trainer:
    """Model, Adam and loss of one workload; `epoch(num_steps)` trains on the random data.

    Args:
      name: a workload name of `workloads.WORKLOADS`.
      steps_per_call: steps in one jitted call (None: 1,000 scanned for the dense models; for
        the conv model 4 unrolled on CPU, 100 scanned elsewhere).
      seed: for the parameters and the noise.
      batch_size: None: the workload's own.
    """

    def __init__(
        self,
        name: str,
        *,
        steps_per_call: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        workload = workloads.WORKLOADS[name]
        batch = batch_size or workload.batch_size
        if workload.family == 'dense':
            model = DenseVAE()
            loss = functools.partial(dense_loss, model=model, k=workload.k_samples)
            loop, default_steps, options = 'scan', 1000, None
        else:
            model = ConvVAE()
            loss = functools.partial(conv_loss, model=model)
            cpu = jax.default_backend() == 'cpu'
            # XLA:CPU runs conv gradients inside a scan far slower; elsewhere a scan is the
            # plain choice (unmeasured on GPU).
            loop, default_steps = ('unroll', 4) if cpu else ('scan', 100)
            options = CPU_CONV_COMPILER_OPTIONS if cpu else None
        images = workloads.train_images(name)
        self.steps_per_call = steps_per_call or default_steps
        self.name = f'hand-written JAX ({loop}, {self.steps_per_call} steps/call)'
        self.batch_size = batch
        self.images = jnp.asarray(images.reshape(images.shape[0], -1))  # [N, 784] on device
        num = self.images.shape[0]
        self.steps_per_epoch = num // batch
        dynamic = workload.dynamic_binarize
        lr, eps = 1e-3, workload.adam_eps
        key = jax.random.key(seed)
        x0 = self.images[:batch]
        if workload.family == 'conv':
            x0 = x0.reshape(batch, 28, 28, 1)
        params = model.init(key, x0, jnp.zeros((batch, model.latent)))
        image_shape = (28, 28, 1) if workload.family == 'conv' else (784,)

        def step(images, carry, idx):
            params, mu, nu, t = carry
            step_key = jax.random.fold_in(key, t)
            x = images[idx].reshape(batch, *image_shape)
            if dynamic:
                bin_key, step_key = jax.random.split(step_key)
                x = (jax.random.uniform(bin_key, x.shape) < x).astype(jnp.float32)
            value, grads = jax.value_and_grad(loss)(params, key=step_key, x=x)
            params, mu, nu = adam_update(params, grads, mu, nu, t, learning_rate=lr, eps=eps)
            return (params, mu, nu, t + 1), value

        # The images are an argument, not a closure: a closed-over array would be compiled into
        # the program as a 188 MB constant.
        def chunk(state, images, order):
            body = functools.partial(step, images)
            if loop == 'scan':
                state, losses = jax.lax.scan(body, state, order)
                return state, losses[-1]
            for i in range(order.shape[0]):
                state, value = body(state, order[i])
            return state, value

        self._chunk = jax.jit(chunk, donate_argnums=0, compiler_options=options)
        self._perm = jax.jit(lambda k: jax.random.permutation(k, num).astype(jnp.int32))
        self._data_key = jax.random.fold_in(key, 1)
        self.state = (params, *adam_init(params), jnp.zeros((), jnp.int32))
        self._order = None  # [steps_per_epoch, B] of the current epoch
        self._epoch = -1
        self._step = 0

    def _indices(self, n: int) -> jax.Array:
        """[n, B] batch indices of the next n steps (within one epoch)."""
        epoch, pos = divmod(self._step, self.steps_per_epoch)
        if epoch != self._epoch:
            perm = self._perm(jax.random.fold_in(self._data_key, epoch))
            self._order = perm[: self.steps_per_epoch * self.batch_size].reshape(
                self.steps_per_epoch, self.batch_size
            )
            self._epoch = epoch
        return self._order[pos : pos + n]

    def epoch(self, num_steps: int) -> float:
        """`num_steps` steps in calls of `steps_per_call` (a call never crosses an epoch).

        Returns:
          The last step's loss (one host sync, at the end).
        """
        done, last = 0, None
        while done < num_steps:
            to_epoch_end = self.steps_per_epoch - self._step % self.steps_per_epoch
            n = min(self.steps_per_call, num_steps - done, to_epoch_end)
            self.state, last = self._chunk(self.state, self.images, self._indices(n))
            self._step += n
            done += n
        return float(np.asarray(last))
