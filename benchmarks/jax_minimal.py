"""A minimal hand-written JAX/Flax implementation of the benchmark workloads (a second reference).

What a researcher would write in one file without vae_jax: the same models as `workloads.py`
(`flax.linen.Dense` / `Conv` / `ConvTranspose`, XLA's default compiler options), one PRNG key per
step drawing the whole batch's noise, the loss in closed form (no distribution objects, no
per-example `vmap`), `optax.adam`, over device-resident data with the state donated, and
`steps_per_call` steps per jitted call in a `lax.scan` (or one step per call, the flax examples'
loop, used for the conv model: XLA:CPU runs scanned convolution gradients far slower). It logs
nothing but the loss.

Beside vae_jax's own path (`trainer.Run(config).chunk_fn`), it shows what vae_jax's generality
costs (per-example keys and `vmap`, distribution objects, the logged metrics) or saves (its
conv-transpose layer and compiler options), and how fast a plain JAX loop gets on this machine.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import workloads

LOG_2PI = math.log(2 * math.pi)


class DenseVAE(nn.Module):
    """784-200-200-(2x50) tanh encoder, 50-200-200-784 tanh decoder (Burda et al. 2016)."""

    latent: int = 50

    def setup(self):
        self.enc = [nn.Dense(200), nn.Dense(200), nn.Dense(2 * self.latent)]
        self.dec = [nn.Dense(200), nn.Dense(200), nn.Dense(784)]

    def encode(self, x):  # [B, 28, 28, 1] -> loc, log_scale [B, D]
        h = x.reshape(x.shape[0], -1)
        h = jnp.tanh(self.enc[0](h))
        h = jnp.tanh(self.enc[1](h))
        return jnp.split(self.enc[2](h), 2, axis=-1)

    def decode(self, z):  # [..., D] -> logits [..., 784]
        h = jnp.tanh(self.dec[0](z))
        h = jnp.tanh(self.dec[1](h))
        return self.dec[2](h)

    def __call__(self, x, z):
        return self.encode(x), self.decode(z)


class ConvVAE(nn.Module):
    """The W3 conv VAE with Flax's own `Conv` / `ConvTranspose` (NHWC)."""

    latent: int = 16

    def setup(self):
        self.c1 = nn.Conv(32, (3, 3), (2, 2))
        self.c2 = nn.Conv(64, (3, 3), (2, 2))
        self.head = nn.Dense(2 * self.latent)
        self.d0 = nn.Dense(7 * 7 * 64)
        self.t1 = nn.ConvTranspose(64, (3, 3), (2, 2))
        self.t2 = nn.ConvTranspose(32, (3, 3), (2, 2))
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


def dense_loss(params, model, key, x, k):
    """Mean over the batch of -IWAE_k (k = 1: the Monte-Carlo ELBO); x [B, 28, 28, 1]."""
    x = x.reshape(x.shape[0], -1)
    loc, log_scale = model.apply(params, x, method=DenseVAE.encode)
    eps = jax.random.normal(key, (k, *loc.shape))
    z = loc + jnp.exp(log_scale) * eps  # [K, B, D]
    logits = model.apply(params, z, method=DenseVAE.decode)  # [K, B, 784]
    log_px = -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), -1)
    log_pz = jnp.sum(-0.5 * z**2 - 0.5 * LOG_2PI, -1)
    log_qz = jnp.sum(-0.5 * eps**2 - log_scale - 0.5 * LOG_2PI, -1)
    bound = jax.nn.logsumexp(log_px + log_pz - log_qz, axis=0) - math.log(k)
    return -jnp.mean(bound)


def conv_loss(params, model, key, x):
    """Mean over the batch of the negative ELBO with the analytic KL; x [B, 28, 28, 1]."""
    loc, log_scale = model.apply(params, x, method=ConvVAE.encode)
    z = loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)
    logits = model.apply(params, z, method=ConvVAE.decode)
    recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x.reshape(x.shape[0], -1)), -1)
    kl = 0.5 * jnp.sum(loc**2 + jnp.exp(2 * log_scale) - 1 - 2 * log_scale, -1)
    return jnp.mean(recon + kl)


class Trainer:
    """Model, Adam and loss of one workload; `epoch(num_steps)` trains on the random data."""

    def __init__(self, name: str, *, steps_per_call: int, seed: int = 0):
        workload = workloads.WORKLOADS[name]
        if workload.family == 'dense':
            model = DenseVAE()
            loss = functools.partial(dense_loss, model=model, k=workload.k_samples)
        else:
            model = ConvVAE()
            loss = functools.partial(conv_loss, model=model)
        loop = f'scan, {steps_per_call} steps/call' if steps_per_call > 1 else 'one step per call'
        self.name = f'minimal JAX/Flax ({loop})'
        self.steps_per_call = steps_per_call
        batch = workloads.BATCH_SIZE
        images = jnp.asarray(workloads.random_images(workloads.NUM_TRAIN, 0))
        key = jax.random.key(seed)
        params = model.init(key, images[:batch], jnp.zeros((batch, model.latent)))
        tx = optax.adam(1e-3, eps=1e-8)

        # Batches are random indices (with replacement): the same gather as a permutation's
        # slice, without carrying a permutation through the loop.
        def step(carry, _):
            params, opt_state, t = carry
            index_key, step_key = jax.random.split(jax.random.fold_in(key, t))
            x = images[jax.random.randint(index_key, (batch,), 0, workloads.NUM_TRAIN)]
            value, grads = jax.value_and_grad(loss)(params, key=step_key, x=x)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, t + 1), value

        @functools.partial(jax.jit, static_argnames='num_steps', donate_argnums=(0, 1))
        def chunk(params, opt_state, t, *, num_steps):
            if num_steps == 1:
                (params, opt_state, t), loss = step((params, opt_state, t), None)
                return params, opt_state, t, loss
            (params, opt_state, t), losses = jax.lax.scan(
                step, (params, opt_state, t), None, length=num_steps
            )
            return params, opt_state, t, losses[-1]

        self._chunk = chunk
        self.state = (params, tx.init(params), jnp.zeros((), jnp.int32))

    def epoch(self, num_steps: int) -> float:
        """`num_steps` steps in calls of `steps_per_call`; returns the last loss (a host sync)."""
        done, loss = 0, float('nan')
        while done < num_steps:
            n = min(self.steps_per_call, num_steps - done)
            *self.state, last = self._chunk(*self.state, num_steps=n)
            loss = float(np.asarray(last))
            done += n
        return loss
