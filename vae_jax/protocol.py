"""The model protocol: what a Flax module needs to train, evaluate and sweep with vae_jax.

`LatentVariableModel` is the protocol, written down once; `models.py` re-exports it and holds
the built-in implementation (the layer-spec `VAE`) and `create_model`, which builds either that
or the module named by `model.module` (`build_module`). Every model, built-in or not, is seen by
the train step, the evaluation, the pictures and `vae_jax.load` through this protocol alone; what
only some models can do is an optional capability, looked up here (`capabilities`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from vae_jax import nnx_models

Array = jax.Array

PROTOCOL_METHODS = ('sample_posterior', 'log_posterior', 'log_likelihood', 'log_prior')
# Optional members: what `vae_jax.load(...).sample` and `.reconstruct` need of a protocol model.
SAMPLING_METHODS = ('sample_prior', 'decode_mean')
# The one-layer capability: q(z|x), p(x|z) and p(z) as distrax distributions of one latent
# vector (see `LatentVariableModel`). It enables the analytic KL, free bits, the autoencoder's
# point-mass code, per-dimension KL, exact posterior means and `encode`/`decode`.
DISTRIBUTION_METHODS = ('posterior_distribution', 'likelihood_distribution', 'prior_distribution')
# Members a model may have; the library uses them when present (see `LatentVariableModel`).
OPTIONAL_METHODS = ('sample_and_log_posterior', *SAMPLING_METHODS, *DISTRIBUTION_METHODS)


@runtime_checkable
class LatentVariableModel(Protocol):
    """The model protocol: what a Flax module (Linen or NNX) needs to train with vae_jax.

    A model is a latent-variable model p(x, z) = p(x | z) p(z) with an inference model q(z | x).
    Its latent z is a pytree of arrays, a dict with one entry per stochastic layer (e.g.
    {'z1': [100], 'z2': [50]}). Modules hold parameters and deterministic maps only: the library
    draws the noise (standard normal) and the module turns it into a sample, so no method uses
    Flax rng streams. Every method takes ONE example x [*event] and latents with a leading sample
    axis K on every leaf; training vmaps the methods over the batch, so the network sees the
    whole batch at once. Each method also takes `y` (the example's int label, or None unless
    `model.use_labels`) and `train` (True inside the train step: BatchNorm-like layers may use
    it; ignore it otherwise). Declare parameters and submodules in `setup()` (Linen allows
    `@nn.compact` on one method only); the library initialises a module by calling all four
    methods once. An `nnx.Module` with the same members works too (`nnx_models.NNXModel`
    adapts it once, outside the jitted step); it declares its layers in `__init__(...,
    rngs)`.

    Members:
      latent_shapes: {name: shape of one sample of that latent}, e.g. {'z': (8,)}; readable on
        the unbound module (a dataclass field, or a property computed from fields).
      sample_posterior(x, noise, y=None, train=False) -> z: a reparameterised sample from
        q(z | x). noise has z's structure, leaves [K, *shape] drawn from N(0, I); z must be a
        differentiable function of the noise and of the parameters (e.g. loc + scale * noise,
        layer by layer for a hierarchy).
      log_posterior(x, z, y=None, train=False) -> [K] log q(z | x). Compute it from x and z
        alone (do not reuse the sampling pass): for sticking-the-landing and DReG the library
        calls it with stop-gradient copies of the parameters and live z.
      log_likelihood(x, z, y=None, train=False) -> [K] log p(x | z). Score the pixels as one
        flat axis ([K, H*W*C], e.g. `x.reshape(-1)`): XLA:CPU vectorises along the last axis,
        and over [K, 28, 28, 1] the per-pixel terms ran ~8x slower.
      log_prior(z, y=None, train=False) -> [K] log p(z); the prior may have parameters (a
        learned mixture, a VampPrior, a hierarchy p(z2) p(z1 | z2)).

    Optional members (`OPTIONAL_METHODS`). For training and evaluation:
      sample_and_log_posterior(x, noise, y=None, train=False) -> (z, [K] log q(z | x)): the
        sample `sample_posterior(x, noise)` returns and its log-density, from ONE pass of the
        inference network. A reparameterised sample knows its density from the noise: for a
        Gaussian layer z = loc + scale * eps, log q = sum(-0.5 eps^2 - log scale - 0.5 log 2 pi);
        for an IAF posterior, that of the base sample minus the sum of the steps' log sigma.
        Without it the objectives call `sample_posterior` and then `log_posterior`, i.e. the
        encoder (and a flow) twice per step. The library uses it wherever it scores a fresh
        sample with live parameters: the ELBO, IWAE with the 'reparam' estimator, the zoo's
        MIWAE / CIWAE / PIWAE, and evaluation's log-weights. STL and DReG need log q with
        stopped variational parameters at a live z, so with those estimators the library keeps
        calling `sample_posterior` and `log_posterior` and never this member. Its values must
        equal theirs (to float rounding), and z must be differentiable in the same way. It
        must use only parameters the four methods create (initialisation calls those four);
        `models.check_model` checks its output shapes.
    For sampling (training and evaluation never call these; `vae_jax.load(workdir)`'s
    `sample_prior`, `sample` and `reconstruct` do, in evaluation mode, and name the one a model
    lacks):
      sample_prior(noise, y=None, train=False) -> z: a draw from p(z). noise has the latents'
        structure, leaves [K, *shape] drawn from N(0, I); z holds the latents that `log_prior`
        and `decode_mean` read, leaves [K, *shape] (a latent only the posterior uses, such as
        `flows.IAFVAE`'s base sample 'z0', may be left out). A hierarchy samples ancestrally
        (z2 ~ p(z2), then z1 ~ p(z1 | z2)).
      decode_mean(z, y=None, train=False) -> [K, *event]: the mean of p(x | z), in x's layout;
        a model whose likelihood reads x flattened may return [K, prod(event)] instead.
    `sample` decodes `sample_prior`'s draws; `reconstruct` decodes `sample_posterior` at zero
    noise (the posterior mean of a one-layer Gaussian q; in a hierarchy, each layer's mean given
    the layers it is conditioned on at theirs; for a flow, the flow's image of its base mean).

    The one-layer capability (`DISTRIBUTION_METHODS`; `models.VAE` has it): a model of ONE latent
    vector {name: (D,)} may describe itself as distrax distributions,
      posterior_distribution(x, y=None, train=False) -> q(z | x), event [D], batch [];
      likelihood_distribution(z, y=None, train=False) -> p(x | z) for z [K, D], batch [K], event
        x's shape;
      prior_distribution(train=False) -> p(z), event [D], batch [];
    and, optionally, the property `standard_normal_prior` (True when p(z) is N(0, I)). With all
    three the library binds the model through them (one encoder pass; the same samples as the
    four methods draw) and offers what needs the distributions: the analytic KL in the ELBO,
    free bits and per-dimension KL (with `standard_normal_prior`), the autoencoder objective (a
    point-mass q), exact posterior means, `vae_jax.load(...).encode` / `.decode`. Their values
    must agree with the four methods'.

    Every objective (`losses.model_elbo`, `losses.model_iwae` with reparam, STL and DReG
    gradients) is a function of log w = log p(x | z) + log p(z) - log q(z | x). An objective or
    feature that needs a capability the model lacks says so (a ValueError naming it).

    Example (a one-layer Gaussian VAE with a Bernoulli likelihood on flat x [M]):

        class MyVAE(nn.Module):
            latent_dim: int = 8

            def setup(self):
                self.encoder = nn.Dense(2 * self.latent_dim)
                ...

            @property
            def latent_shapes(self):
                return {'z': (self.latent_dim,)}

            def _q(self, x):
                h = self.encoder(x)
                return h[: self.latent_dim], jax.nn.softplus(h[self.latent_dim :])

            def sample_posterior(self, x, noise, y=None, train=False):
                loc, scale = self._q(x)
                return {'z': loc[None] + scale[None] * noise['z']}

            def log_posterior(self, x, z, y=None, train=False):
                loc, scale = self._q(x)
                return jax.vmap(lambda z: normal_log_pdf(z, loc, scale).sum())(z['z'])

            def sample_and_log_posterior(self, x, noise, y=None, train=False):  # optional
                loc, scale = self._q(x)
                eps = noise['z']  # [K, D]; log q(z) = log N(eps; 0, I) - sum log scale
                log_q = normal_log_pdf(eps, 0.0, 1.0).sum(-1) - jnp.log(scale).sum()
                return {'z': loc[None] + scale[None] * eps}, log_q
            ...

    README.md ("Your own model") has a complete, runnable example.
    """

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]: ...

    def sample_posterior(
        self, x: Array, noise: Any, y: Array | None = None, train: bool = False
    ): ...

    def log_posterior(self, x: Array, z: Any, y: Array | None = None, train: bool = False): ...

    def log_likelihood(self, x: Array, z: Any, y: Array | None = None, train: bool = False): ...

    def log_prior(self, z: Any, y: Array | None = None, train: bool = False): ...


def missing_members(model: Any, names: tuple[str, ...] = SAMPLING_METHODS) -> list[str]:
    """The names in `names` that `model` does not have as callable members, in order."""
    return [name for name in names if not callable(getattr(model, name, None))]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a model offers beyond the four protocol methods (`capabilities`): hashable.

    Attributes:
      one_pass_posterior: `sample_and_log_posterior`.
      distributions: the one-layer capability (`DISTRIBUTION_METHODS`).
      standard_normal_prior: with `distributions`, p(z) is N(0, I) (free bits, per-dimension KL).
      sample_prior, decode_mean: the sampling members.
    """

    one_pass_posterior: bool = False
    distributions: bool = False
    standard_normal_prior: bool = False
    sample_prior: bool = False
    decode_mean: bool = False


def capabilities(model: Any) -> Capabilities:
    """The optional capabilities of `model`: the one place the library looks them up."""
    distributions = not missing_members(model, DISTRIBUTION_METHODS)
    if distributions:
        shapes = model.latent_shapes
        distributions = len(shapes) == 1 and len(next(iter(shapes.values()))) == 1
    standard = distributions and bool(getattr(model, 'standard_normal_prior', False))
    return Capabilities(
        one_pass_posterior=has_one_pass_posterior(model),
        distributions=distributions,
        standard_normal_prior=standard,
        sample_prior=not missing_members(model, ('sample_prior',)),
        decode_mean=not missing_members(model, ('decode_mean',)),
    )


def import_module_class(path: str) -> type:
    """The class named by `model.module`, 'package.module:ClassName'.

    Raises:
      ValueError: the path is malformed, the module does not import, or it has no such class.
    """
    if not isinstance(path, str) or path.count(':') != 1 or not all(path.split(':')):
        raise ValueError(
            f"model.module={path!r} must look like 'package.module:ClassName' "
            "(e.g. 'my_pkg.my_models:MyVAE')."
        )
    module_name, class_name = path.split(':')
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f'model.module={path!r}: cannot import {module_name!r} ({e}); it must be importable '
            'from the working directory or PYTHONPATH.'
        ) from e
    found: Any = module
    for part in class_name.split('.'):  # A nested class: 'package.module:Outer.Inner'.
        if not hasattr(found, part):
            raise ValueError(
                f'model.module={path!r}: module {module_name!r} has no {class_name!r}.'
            )
        found = getattr(found, part)
    return found


def check_protocol(model: Any, where: str = 'model') -> None:
    """Raises a ValueError naming what `model` lacks of `LatentVariableModel`.

    `model` is a Linen module or an adapted NNX one (`nnx_models.NNXModel`; `models.check_model`
    adapts an `nnx.Module`).
    """
    if isinstance(model, nnx.Module):
        model = nnx_models.NNXModel(model, where=where)
    if not isinstance(model, nn.Module | nnx_models.NNXModel):
        raise ValueError(f'{where}: {type(model).__name__} is not a Flax Linen or NNX module.')
    missing = missing_members(model, PROTOCOL_METHODS)
    # A training member that is present but not a method is a mistake worth stopping on; the
    # sampling members are checked when used (`missing_members`), where None means absent.
    for name in ('sample_and_log_posterior',):
        if hasattr(model, name) and not callable(getattr(model, name)):
            missing.append(f'{name} (optional, but present and not a method)')
    try:
        shapes = model.latent_shapes
    except Exception as e:  # noqa: BLE001 -- reported with the cause below
        missing.append(f'latent_shapes ({type(e).__name__}: {e})')
        shapes = None
    if missing:
        raise ValueError(
            f'{where}: {type(model).__name__} does not follow the model protocol '
            f'(vae_jax.models.LatentVariableModel); missing: {", ".join(missing)}.'
        )
    ok = (
        isinstance(shapes, dict)
        and shapes
        and all(
            isinstance(k, str) and isinstance(v, tuple) and all(isinstance(d, int) for d in v)
            for k, v in shapes.items()
        )
    )
    if not ok:
        raise ValueError(
            f'{where}: {type(model).__name__}.latent_shapes must be a non-empty dict of '
            f'name -> tuple of ints, got {shapes!r}.'
        )


def has_one_pass_posterior(model: Any) -> bool:
    """True when `model` has the optional `sample_and_log_posterior` (see `LatentVariableModel`)."""
    return callable(getattr(model, 'sample_and_log_posterior', None))


def init_all(module: Any, x: Array, y: Array | None) -> Array:
    """Calls the four protocol methods once (K = 1), so that every parameter is created."""
    noise = {
        name: jnp.zeros((1, *shape), jnp.float32) for name, shape in module.latent_shapes.items()
    }
    z = module.sample_posterior(x, noise, y=y, train=False)
    return (
        module.log_posterior(x, z, y=y, train=False)
        + module.log_likelihood(x, z, y=y, train=False)
        + module.log_prior(z, y=y, train=False)
    )


def build_module(path: str, kwargs: dict[str, Any]) -> nn.Module | nnx_models.NNXModel:
    """`ClassName(**kwargs)` for `model.module` = path.

    An `nnx.Module` class is adapted (`nnx_models.NNXModel.from_class`): each `init(key)`
    constructs it with `rngs=nnx.Rngs(params=nnx_models.params_seed(key))`.

    Raises:
      ValueError: the class cannot be found or does not accept the keyword arguments.
    """
    cls = import_module_class(path)
    if nnx_models.is_nnx_class(cls):
        return nnx_models.NNXModel.from_class(cls, kwargs, where=f'model.module={path!r}')
    try:
        # JSON has no tuples: a tuple field (e.g. layer widths) comes back from config.json as a
        # list; a tuple keeps the module hashable and equal to the one that trained.
        return cls(**{k: _as_tuples(v) for k, v in kwargs.items()})
    except TypeError as e:
        raise ValueError(f'model.module={path!r} with model.module_kwargs={kwargs!r}: {e}') from e


def _as_tuples(value: Any) -> Any:
    """Lists (nested too) as tuples; other values unchanged."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value
