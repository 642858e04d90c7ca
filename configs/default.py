"""Default: a dense VAE on the embedded 8x8 `digits` data set (no download needed).

Every config key of the project is defined, with its default and its meaning, in the package's
schema (`vae_jax/config.py`); other configs start from this one and change values, so the
locked config rejects a misspelt key at parse time.

Run:      python -m vae_jax.train --config configs/default.py
Expected: see README.md (test ELBO, steps/s and wall time of `make demo`).
"""

import ml_collections

from vae_jax import config as schema


def get_config() -> ml_collections.ConfigDict:
    return schema.get_config()
