"""Train-step time of an NNX model (through `nnx_models.NNXModel`) against the same Linen network.

Both models are the IWAE paper's one-stochastic-layer MLP (784-200-200-50, tanh, Bernoulli
output), written once in `flax.nnx` and once in `flax.linen` with the same parameter names, and
trained by the library's own jitted `steps.train_step` (donated state, as the trainer calls it)
from the SAME parameters on the same batches. The NNX module is adapted once, outside the step;
the question is whether anything of NNX is left inside the compiled step. Besides the times the
benchmark reports whether the two steps lower to the same program (their jaxprs' equation
counts and whether the optimised HLO text is identical up to names) and whether the two states
after the timed steps are equal.

Run:  python -m benchmarks.nnx_vs_linen [--batch_size 100] [--k_samples 1] [--steps 200]
          [--repeats 5]
Prints one JSON object: per repeat and median, milliseconds per step for each and the ratio
nnx / linen (1.0 = the same; the two are interleaved so machine load affects both alike).

Measured (2 vCPU, XLA:CPU, jax 0.10.2, flax 0.12.8, load average 6-8 from other jobs; defaults):
NNX 6.22, Linen 6.15 ms/step, median ratio 1.01 (per repeat 0.84-1.22: the load's noise);
530 jaxpr equations each, the same optimised HLO, bit-identical parameters after the steps.
"""

import argparse
import functools
import json
import platform
import re
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from configs import test as test_config
from vae_jax import build, steps

DATA_DIM, HIDDEN, LATENT = 784, 200, 50


def _normal_log_prob(z, loc, scale):
    return jnp.sum(-0.5 * jnp.square((z - loc) / scale) - jnp.log(scale) - 0.9189385, -1)


class _Methods:
    """The protocol methods, shared by the NNX and the Linen class (the same attribute names)."""

    @property
    def latent_shapes(self):
        return {'z': (LATENT,)}

    def _q(self, x):
        h = jnp.tanh(self.enc2(jnp.tanh(self.enc1(x.reshape(-1)))))
        h = self.enc_out(h)
        return h[:LATENT], jnp.exp(h[LATENT:])

    def sample_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)
        return {'z': loc[None] + scale[None] * noise['z']}

    def sample_and_log_posterior(self, x, noise, y=None, train=False):
        loc, scale = self._q(x)
        eps = noise['z']
        log_q = jnp.sum(-0.5 * jnp.square(eps) - jnp.log(scale)[None] - 0.9189385, -1)
        return {'z': loc[None] + scale[None] * eps}, log_q

    def log_posterior(self, x, z, y=None, train=False):
        loc, scale = self._q(x)
        return _normal_log_prob(z['z'], loc[None], scale[None])

    def log_likelihood(self, x, z, y=None, train=False):
        logits = self.dec_out(jnp.tanh(self.dec2(jnp.tanh(self.dec1(z['z'])))))
        flat = x.reshape(-1)
        return jnp.sum(flat[None] * logits - jax.nn.softplus(logits), -1)

    def log_prior(self, z, y=None, train=False):
        return _normal_log_prob(z['z'], 0.0, 1.0)


class NNXMLP(_Methods, nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.enc1 = nnx.Linear(DATA_DIM, HIDDEN, rngs=rngs)
        self.enc2 = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
        self.enc_out = nnx.Linear(HIDDEN, 2 * LATENT, rngs=rngs)
        self.dec1 = nnx.Linear(LATENT, HIDDEN, rngs=rngs)
        self.dec2 = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
        self.dec_out = nnx.Linear(HIDDEN, DATA_DIM, rngs=rngs)


class LinenMLP(_Methods, nn.Module):
    def setup(self):
        self.enc1, self.enc2 = nn.Dense(HIDDEN), nn.Dense(HIDDEN)
        self.enc_out = nn.Dense(2 * LATENT)
        self.dec1, self.dec2 = nn.Dense(HIDDEN), nn.Dense(HIDDEN)
        self.dec_out = nn.Dense(DATA_DIM)


def _hlo_without_names(text: str) -> str:
    """The optimised HLO's instructions, without value names, metadata and the debug tables
    (source files and functions, which of course differ)."""
    lines = [line for line in text.splitlines() if re.match(r'\s*(ROOT )?%|\S.*\{$|\s*\}', line)]
    text = '\n'.join(lines)
    text = re.sub(r', metadata=\{[^}]*\}', '', text)
    text = re.sub(r', stack_frame_id=\d+', '', text)
    return re.sub(r'%[\w.\-]+', '%v', text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch_size', type=int, default=100)
    parser.add_argument('--k_samples', type=int, default=1)
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()

    config = test_config.get_config()
    config.objective = 'iwae'
    config.k_samples = args.k_samples
    shape = (28, 28, 1)
    parts = {
        'nnx': build.build(config, shape, model=NNXMLP(rngs=nnx.Rngs(params=0))),
        'linen': build.build(config, shape, model=LinenMLP()),
    }
    params = parts['nnx'].model.init(jax.random.key(0))['params']
    tx = optax.adam(1e-3)
    images = (jax.random.uniform(jax.random.key(1), (args.batch_size, *shape)) < 0.3).astype(
        jnp.float32
    )
    labels = jnp.zeros((args.batch_size,), jnp.int32)
    loop_key, beta = jax.random.key(2), jnp.float32(1.0)

    fns, states, lowered = {}, {}, {}
    for name, p in parts.items():
        fn = jax.jit(functools.partial(steps.train_step, static=p.static), donate_argnums=0)
        state = steps.TrainState.create(apply_fn=p.model.apply, params=params, tx=tx)
        state = state.replace(step=jnp.zeros((), jnp.int32))
        state = jax.tree.map(jnp.array, state)  # own buffers: each run donates its own
        lowered[name] = fn.lower(state, images, labels, loop_key, beta)
        fns[name], states[name] = fn, state

    def run(name: str) -> float:
        state = states[name]
        state, metrics = fns[name](state, images, labels, loop_key, beta)  # compiled, warm
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = fns[name](state, images, labels, loop_key, beta)
        jax.block_until_ready((state, metrics))
        states[name] = state
        return 1e3 * (time.perf_counter() - start) / args.steps

    per_repeat = []
    for _ in range(args.repeats):
        times = {name: run(name) for name in ('nnx', 'linen')}
        per_repeat.append({**times, 'ratio': times['nnx'] / times['linen']})
    same_state = all(
        bool(np.array_equal(a, b))
        for a, b in zip(
            jax.tree.leaves(states['nnx'].params),
            jax.tree.leaves(states['linen'].params),
            strict=True,
        )
    )
    jaxpr_eqns = {
        name: len(
            jax.make_jaxpr(functools.partial(steps.train_step, static=p.static))(
                steps.TrainState.create(apply_fn=p.model.apply, params=params, tx=tx),
                images,
                labels,
                loop_key,
                beta,
            ).eqns
        )
        for name, p in parts.items()
    }
    hlo = {name: _hlo_without_names(low.compile().as_text()) for name, low in lowered.items()}
    print(
        json.dumps(
            {
                'benchmark': 'nnx_vs_linen',
                'model': f'MLP {DATA_DIM}-{HIDDEN}-{HIDDEN}-{LATENT}, iwae k={args.k_samples}',
                'batch_size': args.batch_size,
                'steps_per_repeat': args.steps,
                'device': jax.devices()[0].device_kind,
                'machine': platform.processor() or platform.machine(),
                'ms_per_step': per_repeat,
                'median_ms_per_step': {
                    k: statistics.median(r[k] for r in per_repeat) for k in ('nnx', 'linen')
                },
                'median_ratio_nnx_over_linen': statistics.median(r['ratio'] for r in per_repeat),
                'jaxpr_equations': jaxpr_eqns,
                'same_optimised_hlo': hlo['nnx'] == hlo['linen'],
                'same_params_after_all_steps': same_state,
            },
            indent=2,
        )
    )


if __name__ == '__main__':
    main()
