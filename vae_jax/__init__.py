"""vae_jax: variational autoencoders in JAX/Flax.

`vae_jax.load(workdir)` loads a trained run (vae_jax/trained.py); it is imported on first use, so
`import vae_jax` stays cheap (no JAX import).
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
