"""Where vae_jax's training step loses time against the hand-written one: an A/B ladder.

    python -m benchmarks.profile_step --workload W4-k5 --steps 200 --repeats 7
    python -m benchmarks.profile_step --workload W1 --steps 100 --hlo

Starts from the hand-written step of `benchmarks/jax_minimal.py` (dense models) and switches
on, one at a time, each thing vae_jax's step does differently:
  per_example  a key split per example and the loss `vmap`ped over per-example closures
  distrax      the posterior, prior and likelihood as vae_jax's distrax objects
  metrics      the logged terms (loss, recon, kl) returned and summed over the chunk
  perm         the epoch permutation carried through the loop (cond + dynamic_slice + gather)
               instead of precomputed index rows
  optax        optax.adam instead of the hand-fused Adam
  grad_norm    the global gradient norm, logged
  binarize_per_example  dynamic binarisation from a key split per example (two splits each)
  distrax_sample        z drawn by the posterior object's `sample` and scored by its `log_prob`
                        (a division by the scale) instead of eps
plus the first six together ('all'), all eight ('all8') and vae_jax's own
`trainer.Run.chunk_fn` ('vae_jax').
Every variant runs `--steps` scanned steps per jitted call; timed rounds are interleaved in a
rotating order, and both the fastest and the median round are reported (on a loaded machine the
fastest is the least disturbed). `--hlo` also prints the number of HLO instructions and fusions
of each compiled chunk. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import jax_minimal, workloads
from vae_jax import distributions

FEATURES = ('per_example', 'distrax', 'metrics', 'perm', 'optax', 'grad_norm')
# Two more of vae_jax's differences, tried after the first ladder left a gap (W4 only).
EXTRA = ('binarize_per_example', 'distrax_sample')


def _terms(model, params, key, x, k, *, per_example: bool, use_distrax: bool, sample: bool):
    """(loss, metrics) of the IWAE-k bound on a batch x [B, 784]."""

    def bound(key, x):  # x [..., 784] with leading batch axes [*b]; returns log_w [K, *b], etc.
        loc, log_scale = model.apply(params, x, method=jax_minimal.DenseVAE.encode)
        if sample:
            q = distributions.make_posterior(
                'diagonal', jnp.concatenate([loc, log_scale], -1), scale_transform='exp'
            )
            z = q.sample(seed=key, sample_shape=k)
            eps = (z - loc) / jnp.exp(log_scale)  # what q.log_prob computes
        else:
            eps = jax.random.normal(key, (k, *loc.shape))
            z = loc + jnp.exp(log_scale) * eps
        logits = model.apply(params, z, method=jax_minimal.DenseVAE.decode)
        if use_distrax:
            q = distributions.make_posterior(
                'diagonal', jnp.concatenate([loc, log_scale], -1), scale_transform='exp'
            )
            p_x = distributions.make_likelihood('bernoulli', logits, event_ndims=1)
            prior = distributions.standard_normal_prior(loc.shape[-1])
            log_px = p_x.log_prob(jnp.broadcast_to(x, logits.shape))
            log_pz_qz = prior.log_prob(z) - q.log_prob(z)
        else:
            log_px = -jnp.sum(jax_minimal.bernoulli_nll(logits, x), -1)
            log_pz_qz = jnp.sum(0.5 * (eps**2 - z**2) + log_scale, -1)
        log_w = log_px + log_pz_qz
        value = jax.nn.logsumexp(log_w, axis=0) - math.log(k)
        return value, jnp.mean(log_px, 0), jnp.mean(log_pz_qz, 0)

    if per_example:
        keys = jax.random.split(key, x.shape[0])
        value, recon, kl = jax.vmap(bound)(keys, x)
    else:
        value, recon, kl = bound(key, x)
    return -jnp.mean(value), {
        'loss': -jnp.mean(value),
        'recon': -jnp.mean(recon),
        'kl': -jnp.mean(kl),
    }


class Ladder:
    """A hand-written dense step with some of vae_jax's features switched on."""

    def __init__(self, name: str, features: tuple[str, ...], steps: int):
        workload = workloads.WORKLOADS[name]
        if workload.family != 'dense':
            raise ValueError(
                f'--workload: {name!r} is not a dense workload; allowed: W1, W2, W4-k*'
            )
        batch, k = workload.batch_size, workload.k_samples
        model = jax_minimal.DenseVAE()
        images = jnp.asarray(workloads.train_images(name).reshape(workloads.NUM_TRAIN, -1))
        num = images.shape[0]
        steps_per_epoch = num // batch
        key = jax.random.key(0)
        params = model.init(key, images[:batch], jnp.zeros((batch, model.latent)))
        tx = optax.adam(1e-3, eps=workload.adam_eps)
        f = set(features)
        loss_fn = functools.partial(
            _terms,
            model,
            k=k,
            per_example='per_example' in f,
            use_distrax='distrax' in f,
            sample='distrax_sample' in f,
        )
        data_key = jax.random.fold_in(key, 1)

        def step(images, carry, idx):
            params, opt, t, perm, perm_epoch = carry
            if 'perm' in f:
                epoch = t // steps_per_epoch
                perm = jax.lax.cond(
                    epoch == perm_epoch,
                    lambda: perm,
                    lambda: jax.random.permutation(jax.random.fold_in(data_key, epoch), num),
                )
                idx = jax.lax.dynamic_slice(perm, ((t % steps_per_epoch) * batch,), (batch,))
                perm_epoch = epoch
            x = images[idx]
            step_key = jax.random.fold_in(key, t)
            if workload.dynamic_binarize and 'binarize_per_example' in f:
                pairs = jax.vmap(jax.random.split)(jax.random.split(step_key, batch))
                x = jax.vmap(jax.random.bernoulli)(pairs[:, 0], x).astype(jnp.float32)
            elif workload.dynamic_binarize:
                bin_key, step_key = jax.random.split(step_key)
                x = (jax.random.uniform(bin_key, x.shape) < x).astype(jnp.float32)
            grads, metrics = jax.grad(lambda p: loss_fn(p, step_key, x), has_aux=True)(params)
            if 'optax' in f:
                updates, opt = tx.update(grads, opt, params)
                params = optax.apply_updates(params, updates)
            else:
                params, mu, nu = jax_minimal.adam_update(
                    params, grads, *opt, t, learning_rate=1e-3, eps=workload.adam_eps
                )
                opt = (mu, nu)
            if 'grad_norm' in f:
                metrics['grad_norm'] = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads)))
            out = metrics if 'metrics' in f or 'grad_norm' in f else {'loss': metrics['loss']}
            return (params, opt, t + 1, perm, perm_epoch), out

        def chunk(carry, images, order):  # images an argument: no 188 MB constant
            carry, out = jax.lax.scan(functools.partial(step, images), carry, order)
            return carry, jax.tree.map(lambda m: jnp.sum(m, 0), out)

        opt = tx.init(params) if 'optax' in f else jax_minimal.adam_init(params)
        perm = jax.random.permutation(jax.random.fold_in(data_key, 0), num)
        self.carry = (params, opt, jnp.zeros((), jnp.int32), perm, jnp.zeros((), jnp.int32))
        self.images = images
        self.order = perm[: steps * batch].reshape(steps, batch)
        self._chunk = jax.jit(chunk, donate_argnums=0)
        self.name = '+'.join(features) or 'hand-written'

    def hlo(self) -> str:
        return self._chunk.lower(self.carry, self.images, self.order).compile().as_text()

    def run(self) -> None:
        self.carry, out = self._chunk(self.carry, self.images, self.order)
        jax.block_until_ready(out)


class VaeJax:
    """vae_jax's own chunk (benchmarks.run.JaxTrainer) with `steps` steps per call.

    `no_grad_norm`: the same chunk traced with the logged `grad_norm` replaced by a constant
    zero (what the per-step global norm of the gradients costs inside vae_jax's step).
    """

    def __init__(self, name: str, steps: int, *, no_grad_norm: bool = False):
        from unittest import mock

        from benchmarks import run
        from vae_jax import steps as vae_steps

        self.trainer = run.JaxTrainer(name, steps_per_call=steps)
        self.steps = steps
        self.name = 'vae_jax_no_grad_norm' if no_grad_norm else 'vae_jax'
        self._patch = contextlib.nullcontext
        if no_grad_norm:  # the chunk is traced on its first call (and by hlo), so patch there
            zero = lambda tree: jnp.zeros((), jnp.float32)  # noqa: E731
            self._patch = lambda: mock.patch.object(vae_steps, 'global_norm', zero)
            with self._patch():
                self.run()

    def hlo(self) -> str:
        t = self.trainer
        args = (t.state, t.perm, t.perm_epoch, t.train_images, t.train_labels)
        args += (t.run.loop_key, t.run.data_key, t.beta)
        with self._patch():
            return t.chunk_fn.lower(*args, num_steps=self.steps).compile().as_text()

    def run(self) -> None:
        self.trainer.epoch(self.steps)


def hlo_counts(text: str) -> dict:
    """Instruction and fusion counts of a compiled HLO module's text."""
    lines = [line for line in text.splitlines() if re.match(r'\s+(ROOT )?%?[\w.\-]+ = ', line)]
    return {
        'instructions': len(lines),
        'fusions': sum(' fusion(' in line for line in lines),
        'custom_calls': sum(' custom-call(' in line for line in lines),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workload', default='W4-k5')
    parser.add_argument('--steps', type=int, default=200, help='scanned steps per call')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--variants', default=','.join(('base', *FEATURES, 'all', 'vae_jax')))
    # e.g. --variants base,binarize_per_example,distrax_sample,all,all8,vae_jax
    parser.add_argument('--hlo', action='store_true', help='also count HLO instructions')
    args = parser.parse_args(argv)

    impls = {}
    for v in args.variants.split(','):
        if v in ('vae_jax', 'vae_jax_no_grad_norm'):
            impls[v] = VaeJax(args.workload, args.steps, no_grad_norm=v != 'vae_jax')
        elif v in ('base', 'all', 'all8', *FEATURES, *EXTRA):
            feats = {'base': (), 'all': FEATURES, 'all8': FEATURES + EXTRA}.get(v, (v,))
            impls[v] = Ladder(args.workload, feats, args.steps)
        else:
            raise ValueError(
                f'--variants: unknown {v!r}; allowed: base, {FEATURES + EXTRA}, all, all8, '
                'vae_jax, vae_jax_no_grad_norm'
            )
    for impl in impls.values():
        impl.run()  # compile and warm up
    times = {v: [] for v in impls}
    keys = list(impls)
    for r in range(args.repeats):
        for v in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            impls[v].run()
            times[v].append(1e3 * (time.perf_counter() - start) / args.steps)
    base_min, base_med = min(times[keys[0]]), float(np.median(times[keys[0]]))
    for v in keys:
        row = {
            'workload': args.workload,
            'variant': v,
            'ms_per_step_min': round(min(times[v]), 4),
            'ms_per_step_median': round(float(np.median(times[v])), 4),
            'ratio_min_vs_first': round(min(times[v]) / base_min, 3),
            'ratio_median_vs_first': round(float(np.median(times[v])) / base_med, 3),
            'load_avg': [round(x, 1) for x in __import__('os').getloadavg()],
        }
        if args.hlo:
            row.update(hlo_counts(impls[v].hlo()))
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
