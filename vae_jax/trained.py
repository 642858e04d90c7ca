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

A run of a model of its own (`model.module`, the model protocol) has `log_likelihood`, and
uses the protocol's optional members where the module has them (`two_layer.TwoLayerVAE` and
`flows.IAFVAE` have both): `sample_prior` needs its `sample_prior`, `reconstruct` its
`decode_mean`, `sample` both; otherwise they raise a ValueError naming what is missing. `encode`
and `decode` return distributions of the built-in VAE only.

This module also holds what the trainer and `load` share: the model built from a config
(`build`), the run's keys (`root_keys`) and the initial train state (`create_train_state`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import (
    checkpoints,
    config_validation,
    data,
    evaluation,
    models,
    optim,
    protocol,
    run_files,
    steps,
)


def root_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A run's keys from its seed: (init_key, loop_key, data_key, eval_key), typed [] keys."""
    init_key, loop_key, data_key, eval_key = jax.random.split(jax.random.key(seed), 4)
    return init_key, loop_key, data_key, eval_key


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """A config's model, without data: the Flax module and its evaluation-mode closures.

    Attributes:
      config: the experiment config.
      data_shape: one example's shape, e.g. (28, 28, 1) or (2,).
      static: the jitted step's settings (`steps.StepConfig`).
      model: the Flax module.
      bind_fn: (variables, y [] int or None) -> (encode, decode), evaluation mode; None for a
        model that is not the built-in layer-spec VAE (pictures need these closures).
      model_fn: the model as log-weights for evaluation (`steps.make_model_fn`); None for the
        built-in VAE with the N(0, I) prior, which keeps its analytic-KL evaluation path.
    """

    config: ml_collections.ConfigDict
    data_shape: tuple[int, ...]
    static: steps.StepConfig
    model: nn.Module
    bind_fn: Callable[..., Any] | None
    model_fn: Callable[..., Any] | None = None


def build(
    config: ml_collections.ConfigDict,
    data_shape: tuple[int, ...] | None = None,
    model: nn.Module | None = None,
    dataset_size: int = 0,
) -> ModelParts:
    """The model of `config` (or `model`, a module with the built-in VAE's interface).

    Args:
      config: the experiment config (validated here).
      data_shape: one example's shape; default: computed from `config.input` without any data.
      model: a Flax module to use instead of the one `config.model` describes.
      dataset_size: training examples (beta-TCVAE's minibatch weights); 0 where no step runs.

    Raises:
      ValueError: a bad config value (naming the key, the value and what is allowed).
    """
    config_validation.validate(config)
    if data_shape is None:
        data_shape = data.data_shape(config.input)
    data_shape = tuple(data_shape)
    if model is None:
        model = models.create_model(config.model, data_shape, config.objective)
    else:
        model = models.check_model(model, data_shape, bool(config.model.use_labels), where='model=')
    static = steps.StepConfig.from_config(config, data_shape, model, dataset_size=dataset_size)
    builtin = static.latent_shapes is None
    bind_fn = steps.make_bind_fn(model.apply, static) if builtin else None
    model_fn = None
    if not builtin or static.prior != 'standard_normal':
        model_fn = steps.make_model_fn(model.apply, static)
    return ModelParts(config, data_shape, static, model, bind_fn, model_fn)


def create_train_state(
    parts: ModelParts, key: jax.Array, tx: optax.GradientTransformation
) -> steps.TrainState:
    """Parameters (and BatchNorm statistics) initialised from `key`, with an int32 step 0."""
    variables = models.init_variables(
        parts.model, key, parts.data_shape, bool(parts.config.model.use_labels)
    )
    state = steps.TrainState.create(
        apply_fn=parts.model.apply,
        params=variables['params'],
        tx=tx,
        batch_stats=variables.get('batch_stats', {}),
    )
    # An int32 array step keeps the scan carry's type fixed across calls.
    return state.replace(step=jnp.zeros((), jnp.int32))


# Reads, completes and validates `<workdir>/config.json` (errors name the file and the key).
read_config = run_files.read_config


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
    """

    def __init__(self, parts: ModelParts, variables: dict[str, Any], step: int):
        self.parts = parts
        self.config = parts.config
        self.variables = variables
        self.step = step
        self.eval_key = root_keys(self.config.seed)[3]
        self._reconstruct = jax.jit(steps.reconstruct, static_argnums=0)
        self._decode_mean = jax.jit(steps.decode_mean, static_argnums=0)
        apply_fn, latent_shapes = parts.model.apply, parts.static.latent_shapes
        if latent_shapes is None:
            self._prior_draws = jax.jit(
                functools.partial(_builtin_prior_draws, apply_fn), static_argnums=2
            )
        else:
            where = type(parts.model).__name__
            self._prior_draws = jax.jit(
                functools.partial(_protocol_prior_draws, apply_fn, latent_shapes, where),
                static_argnums=2,
            )
            self._protocol_decode_mean = jax.jit(
                functools.partial(_protocol_decode_mean, apply_fn, parts.data_shape, where)
            )
            self._protocol_reconstruct = jax.jit(
                functools.partial(
                    _protocol_reconstruct, apply_fn, latent_shapes, parts.data_shape, where
                )
            )

    @property
    def latent_dim(self) -> int:
        return int(self.config.model.latent_dim)

    @property
    def builtin(self) -> bool:
        """True for the built-in layer-spec VAE, False for a model of its own (`model.module`)."""
        return self.parts.static.latent_shapes is None

    def _labels(self, labels: Any, n: int, method: str) -> jax.Array:
        if not self.parts.static.use_labels:
            return jnp.zeros((n,), jnp.int32)
        if labels is None:
            raise ValueError(
                f'{method}: this run is conditional (model.use_labels=True): pass labels, [B] '
                f'ints in 0 .. {self.config.model.num_classes - 1}'
            )
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,))
        return labels

    def _batch(self, x: Any, method: str) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:] != self.parts.data_shape:
            raise ValueError(
                f'{method}: x must be [B, {", ".join(map(str, self.parts.data_shape))}] (this '
                f"run's data shape with a leading batch axis), got {x.shape}"
            )
        return x

    def _bind_fn(self, method: str) -> Callable[..., Any]:
        """The encode/decode closures; they exist for the built-in layer-spec VAE only."""
        if self.parts.bind_fn is None:
            raise ValueError(
                f'{method}: this run trained a model of its own ({type(self.parts.model).__name__}'
                '), which offers the log-weights protocol, not encode/decode distributions; use '
                'log_likelihood, sample and reconstruct (these two need the optional members '
                "sample_prior and decode_mean), or call the module's methods with "
                '`self.variables`.'
            )
        return self.parts.bind_fn

    def _require(self, method: str, members: tuple[str, ...]) -> None:
        """Raises a ValueError naming the optional protocol members the model lacks."""
        missing = protocol.missing_members(self.parts.model, members)
        if missing:
            raise ValueError(
                f'{method}: this run trained a model of its own ({type(self.parts.model).__name__}'
                f'), which has no {" and no ".join(_SIGNATURES[name] for name in missing)}: '
                f'optional members of the model protocol (vae_jax.models.LatentVariableModel) '
                f'that {method} needs.'
            )

    def _protocol_labels(self, labels: Any, n: int, method: str) -> jax.Array | None:
        """A protocol model's labels: [n] ints for a conditional run, else None (as in training)."""
        return self._labels(labels, n, method) if self.parts.static.use_labels else None

    def encode(self, x: Any, labels: Any = None) -> distrax.Distribution:
        """q(z|x): x [B, *data_shape] (labels [B] for a conditional run) -> batch [B], event [D]."""
        bind_fn = self._bind_fn('encode')
        x = self._batch(x, 'encode')
        y = self._labels(labels, x.shape[0], 'encode') if self.parts.static.use_labels else None
        encode, _ = bind_fn(self.variables, y)
        return encode(x)

    def decode(self, z: Any, labels: Any = None) -> distrax.Distribution:
        """p(x|z): z [B, D] -> a distribution with batch [B] and event [*data_shape]."""
        bind_fn = self._bind_fn('decode')
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f'decode: z must be [B, {self.latent_dim}], got {z.shape}')
        y = self._labels(labels, z.shape[0], 'decode') if self.parts.static.use_labels else None
        _, decode = bind_fn(self.variables, y)
        return decode(z)

    def reconstruct(self, x: Any, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at the posterior mean: x [B, *data_shape] -> [B, *data_shape].

        A model of its own needs `decode_mean`; it decodes `sample_posterior` at zero noise (the
        posterior mean of a one-layer Gaussian q; in a hierarchy, each layer's mean given the
        layers it is conditioned on at theirs; for an IAF posterior, the flow's image of its
        base mean).
        """
        x = self._batch(x, 'reconstruct')
        if not self.builtin:
            self._require('reconstruct', ('decode_mean',))
            y = self._protocol_labels(labels, x.shape[0], 'reconstruct')
            return np.asarray(self._protocol_reconstruct(self.variables, x, y))
        y = self._labels(labels, x.shape[0], 'reconstruct')
        bind_fn = self._bind_fn('reconstruct')
        return np.asarray(self._reconstruct(bind_fn, self.variables, x, y))

    def sample_prior(self, key: jax.Array, n: int, labels: Any = None) -> Any:
        """n draws z ~ p(z) from the run's prior, learned or not.

        The built-in VAE draws from its prior distribution (`VAE.prior_distribution`, distrax):
        N(0, I) (z = normal(key, [n, D])); the learned mixture of Gaussians ('mog': a component
        by its learned weights, then z from that Gaussian); the VampPrior ('vamp': a pseudo-input
        u_k uniformly, then z ~ q(z | u_k)). A model of its own draws N(0, I) noise for each of
        its latents (`steps.standard_normal_noise`) and calls its `sample_prior` once per draw,
        with that draw's label.

        Args:
          key: the draw's key.
          n: how many.
          labels: [n] (or one int) class labels; required for a conditional model of its own
            (the built-in VAE's prior does not depend on the label: unused there).

        Returns:
          The built-in VAE: [n, D]. A model of its own: what its `sample_prior` returns, e.g.
          {'z1': [n, D1], 'z2': [n, D2]}.

        Raises:
          ValueError: a model of its own without `sample_prior`; a conditional model of its own
            without labels.
        """
        return jax.tree.map(np.asarray, self._draw_prior(key, n, labels, 'sample_prior'))

    def _draw_prior(self, key: jax.Array, n: int, labels: Any, method: str) -> Any:
        if self.builtin:
            return self._prior_draws(self.variables, key, int(n))
        self._require(method, ('sample_prior',))
        y = self._protocol_labels(labels, n, method)
        return self._prior_draws(self.variables, key, int(n), y)

    def sample(self, key: jax.Array, n: int, labels: Any = None) -> np.ndarray:
        """The likelihood's mean at n draws z ~ p(z) (`sample_prior` with the same key).

        A model of its own needs the optional protocol members `sample_prior` and
        `decode_mean`.

        Args:
          key: the draw's key.
          n: how many.
          labels: [n] (or one int) class labels; required for a conditional run.

        Returns:
          [n, *data_shape].

        Raises:
          ValueError: a model of its own without `sample_prior` or `decode_mean` (naming them);
            a conditional run without labels.
        """
        if not self.builtin:
            self._require('sample', protocol.SAMPLING_METHODS)
            y = self._protocol_labels(labels, n, 'sample')
            z = self._draw_prior(key, n, labels, 'sample')
            return np.asarray(self._protocol_decode_mean(self.variables, z, y))
        bind_fn = self._bind_fn('sample')
        y = self._labels(labels, n, 'sample')
        z = self._draw_prior(key, n, labels, 'sample')
        return np.asarray(self._decode_mean(bind_fn, self.variables, z, y))

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
            np.asarray(y),
            self.parts.bind_fn,
            self.variables,
            k_list=(),
            nll_k=int(k_samples),
            batch_size=batch_size,
            dynamic_binarize=self.parts.static.dynamic_binarize,
            return_per_example=True,
            model_fn=self.parts.model_fn,
        )
        return out['per_example']['log_px']


_SIGNATURES = {
    'sample_prior': 'sample_prior(noise, y=None, train=False) -> z',
    'decode_mean': 'decode_mean(z, y=None, train=False) -> [K, *event]',
}


def _builtin_prior_draws(
    apply_fn: Callable[..., Any], variables: Any, key: jax.Array, n: int
) -> jax.Array:
    """n draws from the built-in VAE's prior distribution: [n, D].

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


def load(workdir: str | Path, *, allow_unverified_checkpoints: bool = False) -> TrainedModel:
    """Loads a trained run: its config and newest verified checkpoint, without any data.

    Args:
      workdir: a run directory written by `vae_jax.train` (config.json, checkpoints/).
      allow_unverified_checkpoints: restore a checkpoint whose checksum is missing, with a
        warning (refused otherwise).

    Returns:
      The model with its parameters bound (`TrainedModel`).

    Raises:
      FileNotFoundError: not a run directory, or no checkpoint yet.
      RuntimeError: the newest checkpoint is damaged, or has no checksum (unverified).
    """
    parts = build(read_config(workdir))
    variables, step = restore_variables(
        workdir, parts, allow_unverified_checkpoints=allow_unverified_checkpoints
    )
    return TrainedModel(parts, variables, step)


# fold_in salt of the held-out objective terms (`objective_terms`): their own noise.
OBJECTIVE_SALT = 0x4F424A


def objective_terms(
    parts: ModelParts,
    variables: dict[str, Any],
    eval_key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
) -> dict[str, float]:
    """The training objective's terms on held-out data, in evaluation mode.

    Whatever the objective reports (the ESS of the IWAE family, beta-TCVAE's MI, TC and
    dimension-wise KL, ...), averaged over the examples, in batches of the training batch size
    (beta-TCVAE's estimator depends on it); a last partial batch is left out. The key is
    fold_in(eval_key, OBJECTIVE_SALT), then fold_in(., batch index).

    Args:
      parts: the model (`build`).
      variables: {'params', optional 'batch_stats'}.
      eval_key: the run's evaluation key.
      images: [N, *data_shape]; labels: [N].

    Returns:
      {'objective/<term>': mean}; empty when the data is smaller than one batch.
    """
    batch = int(parts.config.input.batch_size)
    num_batches = images.shape[0] // batch
    if num_batches == 0:
        return {}
    fn = _objective_terms_fn(parts)
    key = jax.random.fold_in(eval_key, OBJECTIVE_SALT)
    sums: dict[str, float] = {}
    for i in range(num_batches):
        rows = slice(i * batch, (i + 1) * batch)
        terms = jax.device_get(
            fn(
                variables['params'],
                variables.get('batch_stats', {}),
                jax.random.fold_in(key, i),
                jnp.asarray(images[rows], jnp.float32),
                jnp.asarray(labels[rows], jnp.int32),
                jnp.asarray(parts.config.beta, jnp.float32),
            )
        )
        for name, values in terms.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(values, dtype=np.float64))
    count = num_batches * batch
    return {f'objective/{name}': total / count for name, total in sums.items()}


def _objective_terms_fn(parts: ModelParts) -> Callable[..., Any]:
    return jax.jit(
        lambda params, stats, key, images, labels, beta: steps.batch_terms(
            params,
            stats,
            key,
            images,
            labels,
            beta,
            apply_fn=parts.model.apply,
            static=parts.static,
            train=False,
        )[0]
    )
