"""The model zoo's objectives under their old module name (the README and experiments cite it).

They are ordinary objectives of the registry (`vae_jax.objectives`): MIWAE, CIWAE and PIWAE in
`vae_jax.iw_objectives`, beta-TCVAE in `vae_jax.tcvae`.
"""

from vae_jax.iw_objectives import model_ciwae, model_miwae, model_piwae
from vae_jax.tcvae import model_beta_tcvae

__all__ = ['model_beta_tcvae', 'model_ciwae', 'model_miwae', 'model_piwae']
