"""vae_jax: variational autoencoders in JAX/Flax.

The public API, documented in the API reference (docs/api/):

- `vae_jax.losses`: per-example objectives (beta-ELBO, IWAE with reparam / STL / DReG, autoencoder).
- `vae_jax.bounds`: bounds as pure functions of log importance weights (IWAE, MIWAE, CIWAE, PIWAE).
- `vae_jax.distributions`: posteriors, priors and likelihoods as distrax distributions.
- `vae_jax.priors`: standard normal, mixture of Gaussians, VampPrior.
- `vae_jax.protocol`: `LatentVariableModel`, what a model of your own implements.
- `vae_jax.models`: the built-in layer-spec VAE / CVAE / autoencoder.
- `vae_jax.evaluation`: importance-sampled NLL, bounds, bits/dim, active units.
- `vae_jax.load(workdir)`: a trained run as a model; imported on first use, so `import vae_jax`
  stays cheap (no JAX import).
- The command lines `python -m vae_jax.train` and `python -m vae_jax.evaluate`, and the config
  keys of `configs/default.py`.

Every other module is internal and may change without notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = '0.1.0'

if TYPE_CHECKING:
    from vae_jax.trained import load


def __getattr__(name: str) -> Any:
    if name == 'load':
        from vae_jax import trained

        return trained.load
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['load']
