"""A trained run as a model for research code: `vae_jax.load(workdir)`.

    import jax, vae_jax
    model = vae_jax.load('experiments/iwae_mnist/workdirs/iwae_k5')
    q = model.encode(x)                      # x [B, 28, 28, 1] -> q(z|x), batch [B], event [D]
    x_mean = model.reconstruct(x)            # [B, 28, 28, 1]
    z = model.sample_prior(jax.random.key(0), 16)              # [16, D], from the run's prior
    samples = model.sample(jax.random.key(0), 16)              # [16, 28, 28, 1]: decoded z
    log_px = model.log_likelihood(jax.random.key(1), x, 5000)  # [B]

`load` rebuilds the model from the run's config.json (the data shape comes from the config, so no
data set is read) and restores the newest checkpoint, verified against the checksum recorded when
it was saved. Full training checkpoints and parameters-only checkpoints (written by
`checkpoints.export_params` for published runs) both load.

Every model is seen through the model protocol (`models.LatentVariableModel`) and its optional
members: `log_likelihood` works for any model; `reconstruct` needs `decode_mean`; `sample_prior`
needs `sample_prior` or the one-layer capability's `prior_distribution` (the built-in VAE's
learned priors are drawn from their distributions); `sample` needs both; `encode` and `decode`
return distributions and need the one-layer capability (`posterior_distribution`,
`likelihood_distribution`). A model lacking a member gets a ValueError naming it.

Building the model from a config (`build`, `root_keys`, `create_train_state`, `read_config`) is
`vae_jax/build.py`; the names are re-exported here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoints, evaluation, optim, protocol, run_files, steps
from vae_jax.build import (  # noqa: F401 -- re-exported: trained.build etc. as before
    ModelParts,
    build,
    create_train_state,
    read_config,
    require_model,
    root_keys,
)


def restore_variables(
    workdir: str | Path, parts: ModelParts, *, allow_unverified_checkpoints: bool = False
) -> tuple[dict[str, Any], int]:
    """The newest verified checkpoint's variables {'params', optional 'batch_stats'} and step.

    `allow_unverified_checkpoints` restores one without a checksum, with a warning.

    Raises:
      FileNotFoundError: the run has no checkpoint.
      RuntimeError: the newest checkpoint is damaged, or has no checksum (unverified).
    """
    config = parts.config
    # The optimizer's state has the same structure for any steps_per_epoch: no data needed.
    tx = optim.create_optimizer(
        config.optim, steps_per_epoch=1, num_train_steps=config.num_train_steps
    )
    target = jax.device_get(create_train_state(parts, root_keys(config.seed)[0], tx))
    restored, step = checkpoints.load(
        Path(workdir),
        target,
        allow_params_only=True,
        allow_unverified=allow_unverified_checkpoints,
    )
    if step is None:
        raise FileNotFoundError(
            f'no checkpoint in {Path(workdir) / run_files.CHECKPOINT_DIR}: train the run first '
            '(python -m vae_jax.train)'
        )
    return checkpoints.variables_of(restored), step


class TrainedModel:
    """A trained run's model with its parameters bound; every method is jitted once per shape.

    Attributes:
      config: the run's config.
      step: the step of the restored checkpoint.
      variables: {'params', optional 'batch_stats'}.
      eval_key: the run's evaluation key (what the trainer and `vae_jax.evaluate` use).
      parts: the model (`ModelParts`).
      capabilities: the model's optional members (`protocol.capabilities`).
    """

    def __init__(self, parts: ModelParts, variables: dict[str, Any], step: int):
        self.parts = parts
        self.config = parts.config
        self.variables = variables
        self.step = step
        self.eval_key = root_keys(self.config.seed)[3]
        self.capabilities = protocol.capabilities(parts.model)
        apply_fn, latent_shapes = parts.model.apply, parts.static.latent_shapes
        where = type(parts.model).__name__
        if self.capabilities.distributions:
            self._prior_draws = jax.jit(
                functools.partial(_distribution_prior_draws, apply_fn), static_argnums=2
            )
        else:
            self._prior_draws = jax.jit(
                functools.partial(_protocol_prior_draws, apply_fn, latent_shapes, where),
                static_argnums=2,
            )
        self._decode_mean = jax.jit(
            functools.partial(_protocol_decode_mean, apply_fn, parts.data_shape, where)
        )
        self._reconstruct = jax.jit(
            functools.partial(
                _protocol_reconstruct, apply_fn, latent_shapes, parts.data_shape, where
            )
        )

    @property
    def latent_dim(self) -> int:
        """D of a model with one latent vector (the built-in VAE's `model.latent_dim`)."""
        shapes = self.parts.static.latent_shapes
        if len(shapes) == 1 and len(shapes[0][1]) == 1:
            return int(shapes[0][1][0])
        return int(self.config.model.latent_dim)

    @property
    def builtin(self) -> bool:
        """True for the built-in layer-spec VAE, False for a model of its own (`model.module`)."""
        return self.config.model.module is None

    def _labels(self, labels: Any, n: int, method: str) -> jax.Array | None:
        """[n] int labels for a conditional run (required there), else None (as in training)."""
        if not self.parts.static.use_labels:
            return None
        if labels is None:
            raise ValueError(
                f'{method}: this run is conditional (model.use_labels=True): pass labels, [B] '
                f'ints in 0 .. {self.config.model.num_classes - 1}'
            )
        return jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))

    def _batch(self, x: Any, method: str) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:] != self.parts.data_shape:
            raise ValueError(
                f'{method}: x must be [B, {", ".join(map(str, self.parts.data_shape))}] (this '
                f"run's data shape with a leading batch axis), got {x.shape}"
            )
        return x

    def _require(self, method: str, members: tuple[str, ...]) -> None:
        """Raises a ValueError naming the optional protocol members the model lacks."""
        missing = protocol.missing_members(self.parts.model, members)
        if missing:
            raise ValueError(
                f'{method}: this run trained a model ({type(self.parts.model).__name__}), which '
                f'has no {" and no ".join(_SIGNATURES.get(name, name) for name in missing)}: '
                'optional members of the model protocol (vae_jax.models.LatentVariableModel) '
                f'that {method} needs.'
            )

    def _require_distributions(self, method: str) -> None:
        """Raises a ValueError unless the model has the one-layer capability."""
        if not self.capabilities.distributions:
            raise ValueError(
                f'{method}: this run trained a model ({type(self.parts.model).__name__}) without '
                'the one-layer capability (posterior_distribution, likelihood_distribution and '
                'prior_distribution of one latent vector), so it has no encode/decode '
                'distributions; use log_likelihood, sample and reconstruct (these two need the '
                "optional members sample_prior and decode_mean), or call the module's methods "
                'with `self.variables`.'
            )

    def _apply(self, method: str, *args: Any) -> Any:
        return self.parts.model.apply(self.variables, *args, train=False, method=method)

    def encode(self, x: Any, labels: Any = None) -> distrax.Distribution:
        """q(z|x): x [B, *data_shape] (labels [B] for a conditional run) -> batch [B], event [D].

        Needs the one-layer capability (`posterior_distribution`; the built-in VAE has it).
        """
        self._require_distributions('encode')
        x = self._batch(x, 'encode')
        return self._apply('posterior_distribution', x, self._labels(labels, x.shape[0], 'encode'))

    def decode(self, z: Any, labels: Any = None) -> distrax.Distribution:
        """p(x|z): z [B, D] -> a distribution with batch [B] and event [*data_shape].

        Needs the one-layer capability (`likelihood_distribution`; the built-in VAE has it).
        """
        self._require_distributions('decode')
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f'decode: z must be [B, {self.latent_dim}], got {z.shape}')
        return self._apply('likelihood_distribution', z, self._labels(labels, z.shape[0], 'decode'))

    def reconstruct(self, x: Any, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at the posterior mean: x [B, *data_shape] -> [B, *data_shape].

        Decodes (`decode_mean`) `sample_posterior` at zero noise: the posterior mean of a
        one-layer Gaussian q; in a hierarchy, each layer's mean given the layers it is
        conditioned on at theirs; for an IAF posterior, the flow's image of its base mean.
        """
        x = self._batch(x, 'reconstruct')
        self._require('reconstruct', ('decode_mean',))
        y = self._labels(labels, x.shape[0], 'reconstruct')
        return np.asarray(self._reconstruct(self.variables, x, y))

    def sample_prior(self, key: jax.Array, n: int, labels: Any = None) -> Any:
        """n draws z ~ p(z) from the run's prior, learned or not.

        A model with the one-layer capability draws from its `prior_distribution` (the built-in
        VAE: N(0, I), z = normal(key, [n, D]); the learned mixture of Gaussians ('mog': a
        component by its learned weights, then z from that Gaussian); the VampPrior ('vamp': a
        pseudo-input u_k uniformly, then z ~ q(z | u_k))). Any other model draws N(0, I) noise
        for each of its latents (`steps.standard_normal_noise`) and calls its `sample_prior`
        once per draw, with that draw's label.

        Args:
          key: the draw's key.
          n: how many.
          labels: [n] (or one int) class labels; required for a conditional model without the
            one-layer capability (the built-in VAE's prior does not depend on the label).

        Returns:
          With the one-layer capability: [n, D]. Otherwise what the model's `sample_prior`
          returns, e.g. {'z1': [n, D1], 'z2': [n, D2]}.

        Raises:
          ValueError: a model with neither; a conditional model without labels.
        """
        return jax.tree.map(np.asarray, self._draw_prior(key, n, labels, 'sample_prior'))

    def _draw_prior(self, key: jax.Array, n: int, labels: Any, method: str) -> Any:
        if self.capabilities.distributions:
            return self._prior_draws(self.variables, key, int(n))
        self._require(method, ('sample_prior',))
        return self._prior_draws(self.variables, key, int(n), self._labels(labels, n, method))

    def _as_latents(self, z: Any) -> Any:
        """A bare array [n, D] (a one-layer prior draw, the manifold's grid) as the protocol's
        latents {name: [n, D]} of a model with one latent; latents already a dict unchanged."""
        shapes = self.parts.static.latent_shapes
        if not isinstance(z, dict) and len(shapes) == 1:
            return {shapes[0][0]: z}
        return z

    def decode_mean(self, z: Any, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at given latents: z (leaves [n, *shape], or [n, D] for a
        one-layer model) -> [n, *data_shape]. Needs `decode_mean`."""
        self._require('decode_mean', ('decode_mean',))
        z = self._as_latents(jax.tree.map(jnp.asarray, z))
        n = jax.tree.leaves(z)[0].shape[0]
        return np.asarray(
            self._decode_mean(self.variables, z, self._labels(labels, n, 'decode_mean'))
        )

    def sample(self, key: jax.Array, n: int, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at n draws z ~ p(z) (`sample_prior` with the same key).

        Args:
          key: the draw's key.
          n: how many.
          labels: [n] (or one int) class labels; required for a conditional run.

        Returns:
          [n, *data_shape].

        Raises:
          ValueError: a model without what `sample_prior` needs or without `decode_mean`
            (naming them); a conditional run without labels.
        """
        needs = ('decode_mean',) if self.capabilities.distributions else protocol.SAMPLING_METHODS
        self._require('sample', needs)
        y = self._labels(labels, n, 'sample')
        z = self._as_latents(self._draw_prior(key, n, labels, 'sample'))
        return np.asarray(self._decode_mean(self.variables, z, y))

    def log_likelihood(
        self,
        key: jax.Array,
        x: Any,
        k_samples: int = 5000,
        labels: Any = None,
        *,
        batch_size: int = evaluation.BATCH_SIZE,
    ) -> np.ndarray:
        """Importance-sampled log p(x) per example (Burda et al. 2016), in nats: [B].

        Computed exactly as `vae_jax.evaluate` computes the run's NLL (example n uses
        fold_in(key, n); a run trained with dynamic binarisation binarises x from that key), so
        with `key=model.eval_key` and the run's test images, -mean equals eval.json's 'nll'.

        Args:
          key: importance-sampling key.
          x: [B, *data_shape] in the likelihood's support.
          k_samples: importance samples per example.
          labels: [B] for a conditional run.
          batch_size: examples per jitted call (memory, not values).
        """
        x = self._batch(x, 'log_likelihood')
        y = self._labels(labels, x.shape[0], 'log_likelihood')
        out = evaluation.evaluate_dataset(
            key,
            np.asarray(x),
            None if y is None else np.asarray(y),
            variables=self.variables,
            model_fn=self.parts.model_fn,
            k_list=(),
            nll_k=int(k_samples),
            batch_size=batch_size,
            dynamic_binarize=self.parts.static.dynamic_binarize,
            return_per_example=True,
        )
        return out['per_example']['log_px']


_SIGNATURES = {
    'sample_prior': 'sample_prior(noise, y=None, train=False) -> z',
    'decode_mean': 'decode_mean(z, y=None, train=False) -> [K, *event]',
}


def _distribution_prior_draws(
    apply_fn: Callable[..., Any], variables: Any, key: jax.Array, n: int
) -> jax.Array:
    """n draws from a one-layer model's `prior_distribution`: [n, D].

    distrax's `MixtureSameFamily.sample` draws each component index from the mixture's weights,
    then z from that component (for 'vamp': uniform weights, components q(z | u_k)).
    """

    def draw(module):
        return module.prior_distribution(train=False).sample(seed=key, sample_shape=n)

    return apply_fn(variables, method=draw)


def _with_k(tree: Any) -> Any:
    """Leaves [*shape] -> [1, *shape]: one example's single draw as K = 1 samples."""
    return jax.tree.map(lambda a: a[None], tree)


def _protocol_prior_draws(
    apply_fn: Callable[..., Any],
    latent_shapes: tuple[tuple[str, tuple[int, ...]], ...],
    where: str,
    variables: Any,
    key: jax.Array,
    n: int,
    y: jax.Array | None,
) -> Any:
    """n draws of a protocol model's `sample_prior`, one call per draw: leaves [n, *shape].

    Args:
      apply_fn: the module's `apply`; latent_shapes: ((name, shape), ...); where: its class name.
      variables: {'params', optional 'batch_stats'}.
      key: the noise's key (`steps.standard_normal_noise`, K = n).
      n: how many (static).
      y: [n] int labels, or None for an unconditional model.
    """
    noise = steps.standard_normal_noise(key, n, latent_shapes)

    def one(noise, y):
        z = apply_fn(variables, _with_k(noise), y=y, train=False, method='sample_prior')
        leaves = jax.tree.leaves(z)
        if not leaves or any(a.ndim < 1 or a.shape[0] != 1 for a in leaves):
            raise ValueError(
                f'{where}.sample_prior returned {jax.tree.map(jnp.shape, z)} for K = 1 noise '
                'draws; it must return the latents as a pytree of [K, *shape] arrays.'
            )
        return jax.tree.map(lambda a: a[0], z)

    return jax.vmap(one)(noise, y)


def _event(out: jax.Array, data_shape: tuple[int, ...], where: str) -> jax.Array:
    """`decode_mean`'s output for K = 1, [1, *data_shape] or [1, prod(data_shape)] -> [*data_shape].

    Raises:
      ValueError: any other shape.
    """
    flat = math.prod(data_shape)
    if out.shape not in ((1, *data_shape), (1, flat)):
        raise ValueError(
            f'{where}.decode_mean returned shape {out.shape} for K = 1 latents; it must return '
            f'[K, {", ".join(map(str, data_shape))}] (the data shape) or [K, {flat}] (flattened).'
        )
    return out.reshape(data_shape)


def _protocol_decode_mean(
    apply_fn: Callable[..., Any],
    data_shape: tuple[int, ...],
    where: str,
    variables: Any,
    z: Any,
    y: jax.Array | None,
) -> jax.Array:
    """A protocol model's `decode_mean`, per draw: z leaves [B, *shape] -> [B, *data_shape]."""

    def one(z, y):
        out = apply_fn(variables, _with_k(z), y=y, train=False, method='decode_mean')
        return _event(out, data_shape, where)

    return jax.vmap(one)(z, y)


def _protocol_reconstruct(
    apply_fn: Callable[..., Any],
    latent_shapes: tuple[tuple[str, tuple[int, ...]], ...],
    data_shape: tuple[int, ...],
    where: str,
    variables: Any,
    x: jax.Array,
    y: jax.Array | None,
) -> jax.Array:
    """`decode_mean` at `sample_posterior` with zero noise: x [B, *data_shape] -> the same shape."""

    def one(x, y):
        noise = {name: jnp.zeros((1, *shape), jnp.float32) for name, shape in latent_shapes}
        z = apply_fn(variables, x, noise, y=y, train=False, method='sample_posterior')
        out = apply_fn(variables, z, y=y, train=False, method='decode_mean')
        return _event(out, data_shape, where)

    return jax.vmap(one)(x, y)


def load(
    workdir: str | Path, model: Any = None, *, allow_unverified_checkpoints: bool = False
) -> TrainedModel:
    """Loads a trained run: its config and newest verified checkpoint, without any data.

    Args:
      workdir: a run directory written by `vae_jax.train` (config.json, checkpoints/).
      model: the module the run trained, for a run trained with a model passed from Python
        that its config.json cannot rebuild (checked against the recorded class and fields).
      allow_unverified_checkpoints: restore a checkpoint whose checksum is missing, with a
        warning (refused otherwise).

    Returns:
      The model with its parameters bound (`TrainedModel`).

    Raises:
      FileNotFoundError: not a run directory, or no checkpoint yet.
      build.ModelNotRebuildable: the run's model must be passed from Python (`model=`).
      ValueError: `model` is not the model the run recorded.
      RuntimeError: the newest checkpoint is damaged, has no checksum (unverified), or was
        written by another model.
    """
    config = read_config(workdir)
    require_model(config, model, workdir)
    parts = build(config, model=model)
    variables, step = restore_variables(
        workdir, parts, allow_unverified_checkpoints=allow_unverified_checkpoints
    )
    return TrainedModel(parts, variables, step)
