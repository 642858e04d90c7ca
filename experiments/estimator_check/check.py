"""The two checks that found the STL/DReG diagonal-posterior bug, as a script.

Run from the repository root:  python experiments/estimator_check/check.py

1. Exact posterior. p(z) = N(0, 1), p(x|z) = N(z, 1), x = 1; the exact posterior is N(x/2, 1/2),
   built as distrax.MultivariateNormalDiag(mu, exp(log_sigma)). STL and DReG (k = 4) must give a
   zero encoder gradient for mu AND log_sigma, for every key.
2. Bias. The same model in 2-D with a wrong diagonal q (learnable mu, log_sigma), k = 8, 20,000
   keys: DReG's mean encoder gradient must equal the plain reparameterised one, and a textbook
   DReG written here by hand (independently of vae_jax) must agree with vae_jax's on each key.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions, losses


def _encode(phi):
    return lambda x: distrax.MultivariateNormalDiag(phi['mu'], jnp.exp(phi['log_sigma']))


def _decode(z):  # z [K, D] -> N(z, 1), batch [K], event [D]
    return distributions.make_likelihood('gaussian', z, event_ndims=1, sigma=1.0)


def _grad(phi, x, key, k, estimator):
    def loss(phi):
        return losses.iwae(key, x, _encode(phi), _decode, k_samples=k, estimator=estimator)['loss']

    return jax.grad(loss)(phi)


def _hand_dreg(phi, x, key, k):
    """Textbook DReG (Tucker et al. 2018): grad = -sum_k w~_k^2 d log w_k / dz_k dz_k / dphi."""
    eps = jax.random.normal(key, (k,) + phi['mu'].shape)

    def log_w(phi_path, phi_stopped):
        z = phi_path['mu'] + jnp.exp(phi_path['log_sigma']) * eps  # [K, D]
        sg = jax.lax.stop_gradient(phi_stopped)
        log_q = jnp.sum(
            -0.5 * ((z - sg['mu']) / jnp.exp(sg['log_sigma'])) ** 2
            - sg['log_sigma']
            - 0.5 * jnp.log(2 * jnp.pi),
            axis=-1,
        )
        log_p = jnp.sum(-0.5 * z**2 - 0.5 * (x - z) ** 2 - jnp.log(2 * jnp.pi), axis=-1)
        return log_p - log_q  # [K]

    lw = log_w(phi, phi)
    weights = jax.lax.stop_gradient(jax.nn.softmax(lw)) ** 2
    return jax.grad(lambda p: -jnp.sum(weights * log_w(p, phi)))(phi)


def main():
    x1 = jnp.ones((1,), jnp.float32)
    exact = {'mu': x1 / 2, 'log_sigma': jnp.full((1,), 0.5 * np.log(0.5), jnp.float32)}
    print('1. exact posterior, k = 4: encoder gradient over five keys')
    for estimator in ('stl', 'dreg'):
        for name in ('mu', 'log_sigma'):
            values = [
                float(_grad(exact, x1, jax.random.key(s), 4, estimator)[name][0]) for s in range(5)
            ]
            print(f'   {estimator:5s} {name:9s}', ' '.join(f'{v:+.3f}' for v in values))

    x2 = jnp.asarray([1.0, -0.5], jnp.float32)
    wrong = {'mu': jnp.asarray([0.8, 0.3]), 'log_sigma': jnp.asarray([-1.0, 0.2])}
    keys = jax.random.split(jax.random.key(0), 20_000)
    print('2. wrong diagonal q, k = 8, 20,000 keys: mean encoder gradient (standard error)')
    rows = {
        'reparam': jax.vmap(lambda key: _grad(wrong, x2, key, 8, 'reparam'))(keys),
        'dreg': jax.vmap(lambda key: _grad(wrong, x2, key, 8, 'dreg'))(keys),
        'hand-written dreg': jax.vmap(lambda key: _hand_dreg(wrong, x2, key, 8))(keys),
    }
    for label, grads in rows.items():
        for name in ('mu', 'log_sigma'):
            g = np.asarray(grads[name], np.float64)
            mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(len(g))
            cells = ', '.join(f'{m:+.3f} ({s:.3f})' for m, s in zip(mean, se, strict=True))
            print(f'   {label:17s} {name:9s} {cells}')
    print('   dreg - reparam, paired on each key: mean (standard error)')
    for name in ('mu', 'log_sigma'):
        d = np.asarray(rows['dreg'][name] - rows['reparam'][name], np.float64)
        mean, se = d.mean(0), d.std(0, ddof=1) / np.sqrt(len(d))
        cells = ', '.join(f'{m:+.4f} ({s:.4f})' for m, s in zip(mean, se, strict=True))
        print(f'   {"":17s} {name:9s} {cells}')
    diff = {n: np.abs(rows['dreg'][n] - rows['hand-written dreg'][n]).max() for n in wrong}
    print('   max |vae_jax dreg - hand-written dreg| per key:', diff)


if __name__ == '__main__':
    main()
