"""`Run`: what training one config needs (data, model, keys, optimizer, mesh, jitted chunk), and
the stacking of N models' states on a leading axis for the vectorised sweep.

The training loop that uses them is `trainer.train_models`; the model alone, without data, is
`build.ModelParts`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import (
    backends,
    build,
    config_validation,
    input_transform,
    optim,
    run_eval,
    run_files,
    sharded_data,
    steps,
    streaming,
    writers,
)

root_keys = build.root_keys

# Config keys in which the models of one vectorised sweep (vae_jax/sweep.py) may differ.
PER_MODEL_KEYS = ('seed', 'beta', 'sweep')


class Run:
    """What training one config needs: data, model, keys, optimizer, mesh, jitted functions.

    The model alone (no data) is `build.ModelParts` (`self.parts`); evaluation and pictures take
    the model and plain values (variables, data, key), not this object.
    """

    def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
        config_validation.validate(config)
        writers.require_trackers(config)  # An ImportError naming the extra, before any file.
        self.config = config
        # With binarize='none', checks the likelihood's support, naming the file or data set.
        # input.pipeline: 'device' holds train_data; 'stream' reads train_source's rows per step
        # (vae_jax/streaming.py), and train_data is None when they come from files. On several
        # devices 'device' shards the split (vae_jax/sharded_data.py); with several processes,
        # each then reads its own rows from train_source and train_data is None too.
        self.pipeline, self.train_data, self.test_data, self.train_source = streaming.load_splits(
            config.input,
            likelihood=config.model.likelihood,
            num_devices=jax.device_count(),
            num_processes=jax.process_count(),
        )
        # Images stay as stored (uint8/bool) in both pipelines; each jitted step converts its
        # batch (input_transform.to_model_input).
        if self.train_source is not None:  # Its stored dtype and row shape, from its first row.
            stored, row_shape = self.train_source, self.train_source.row_shape
            num_train = len(self.train_source)
        else:
            stored, num_train = self.train_data['image'], self.train_data['image'].shape[0]
            row_shape = stored.shape[1:]
        self.input_spec = input_transform.spec_from(config.input, stored)
        self.data_shape = self.input_spec.model_shape(row_shape)
        if config.input.batch_size > num_train:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} is larger than the '
                f'{num_train} training examples of {config.input.dataset!r}; '
                f'allowed: <= {num_train}'
            )
        self.num_train = num_train
        self.steps_per_epoch = num_train // config.input.batch_size
        self.parts = build.build(config, self.data_shape, model, dataset_size=num_train)
        self.static, self.model = self.parts.static, self.parts.model
        self.init_key, self.loop_key, self.data_key, self.eval_key = root_keys(config.seed)
        self.tx = optim.create_optimizer(
            config.optim,
            steps_per_epoch=self.steps_per_epoch,
            num_train_steps=config.num_train_steps,
        )
        self.mesh = Mesh(np.array(jax.devices()), ('data',))
        num_devices = self.mesh.size
        if config.input.batch_size % num_devices:
            raise ValueError(
                f'config.input.batch_size={config.input.batch_size} must be divisible by the '
                f'number of devices ({num_devices}) for data-parallel training; allowed: a '
                f'multiple of {num_devices}'
            )
        # Data parallel, one code path for any number of devices: parameters replicated, each
        # batch split along the mesh's 'data' axis (B / num_devices examples per device).
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P('data'))
        # On several devices each holds ceil(N / D) rows of the split, not all N.
        self.shard_train = self.pipeline == 'device' and num_devices > 1

    def create_train_state(self) -> steps.TrainState:
        """Initialises parameters (and BatchNorm statistics) from `init_key`, replicated."""
        state = build.create_train_state(self.parts, self.init_key, self.tx)
        # Through the host: with several processes, a single-device array cannot be put on
        # other hosts' devices, but every process holds the same host values.
        return jax.device_put(jax.device_get(state), self.replicated)

    @property
    def chunk_body(self) -> Callable[..., Any]:
        """`steps.train_chunk` with this run's static settings, not jitted (the sweep vmaps it)."""
        return self.chunk_with(self.static)

    def chunk_with(self, static: steps.StepConfig) -> Callable[..., Any]:
        """The chunk body with `static` as its step configuration (vae_jax/k_sweep.py's rows).

        It takes the train split as `device_split()` puts it: on several devices the sharded
        split's chunk (`sharded_data.train_chunk`), else `steps.train_chunk`.
        """
        settings = dict(
            batch_size=self.config.input.batch_size,
            loop=self.config.loop,
            static=static,
            batch_sharding=self.batch_sharding,
            input_spec=self.input_spec,
        )
        if self.shard_train:
            return functools.partial(
                sharded_data.train_chunk, num_examples=self.num_train, mesh=self.mesh, **settings
            )
        return functools.partial(steps.train_chunk, **settings)

    @functools.cached_property
    def chunk_fn(self) -> Callable[..., Any]:
        """The jitted multi-step call; one compile per distinct `num_steps`."""
        return jax.jit(
            self.chunk_body,
            static_argnames=('num_steps',),
            donate_argnums=(0, 1),
            compiler_options=backends.compiler_options(backends.model_family(self.config)),
        )

    @functools.cached_property
    def permutation_fn(self) -> Callable[[jax.Array], jax.Array]:
        num = self.num_train
        return jax.jit(lambda epoch: steps.epoch_permutation(self.data_key, epoch, num))

    def device_split(self, sharded: bool | None = None) -> tuple[jax.Array, jax.Array]:
        """The train split on the devices, as `chunk_fn` (sharded) or `chunk_body` takes it.

        Args:
          sharded: None: `shard_train`, as the chunk takes it. True: `sharded_data.put_split`
            (ceil(N / D) rows a device, each process reading its own rows only). False: all N
            rows on every device (for `steps.train_chunk` called directly).

        Returns:
          (images [N or D * ceil(N / D), ...] as stored, labels [...] int32).
        """
        if self.shard_train if sharded is None else sharded:
            return sharded_data.put_split(self.train_rows, self.num_train, self.mesh)
        images, labels = self.train_rows(0, self.num_train)
        return jax.device_put(images, self.replicated), jax.device_put(labels, self.replicated)

    def train_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored train rows start .. stop - 1: (images [n, ...], labels [n] int32)."""
        if self.train_data is not None:
            return self.train_data['image'][start:stop], self.train_data['label'][start:stop]
        return self.train_source.read(np.arange(start, stop))

    def variables(self, state: steps.TrainState) -> dict[str, Any]:
        variables = {'params': state.params}
        if state.batch_stats:
            variables['batch_stats'] = state.batch_stats
        if jax.process_count() > 1:
            # Evaluation then runs on each process's own devices, not as a cross-host program.
            variables = jax.device_get(variables)
        return variables

    def evaluate(
        self, state: steps.TrainState, *, nll_k: int = 0
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Test-split metrics with the fixed eval key (comparable across steps and runs), and
        the per-example arrays (`run_eval.evaluate_run`)."""
        images, labels = self.eval_split()
        return run_eval.evaluate_run(
            self.parts,
            self.variables(state),
            images,
            labels,
            key=self.eval_key,
            nll_k=nll_k,
            batch_size=self.config.input.eval_batch_size,
            step=int(jax.device_get(state.step)),
            input_spec=self.input_spec,
        )

    def eval_split(self) -> tuple[np.ndarray, np.ndarray]:
        """The first `num_eval_examples` test images (as stored) and labels."""
        n = self.config.num_eval_examples
        images, labels = self.test_data['image'], self.test_data['label']
        return (images[:n], labels[:n]) if n else (images, labels)

    def for_config(self, config: ml_collections.ConfigDict) -> Run:
        """This run with another `seed` / `beta` (the models of a vectorised sweep).

        Shares the loaded data, model, optimizer, mesh and model function (so evaluation
        compiles once for all models); takes the keys of `config.seed` and drops compiled
        functions that close over the old keys.

        Raises:
          ValueError: `config` differs from this run's config in more than `PER_MODEL_KEYS`.
        """
        config_validation.validate(config)
        old, new = (json.loads(c.to_json_best_effort()) for c in (self.config, config))
        for key in PER_MODEL_KEYS:
            old.pop(key, None)
            new.pop(key, None)
        if old != new:
            raise ValueError(
                f'the models of one run may differ only in {", ".join(PER_MODEL_KEYS)}; '
                f'these differ too: {run_files.config_diff(old, new)}'
            )
        run = copy.copy(self)
        for name, attr in vars(Run).items():  # cached properties live in the instance dict
            if isinstance(attr, functools.cached_property):
                run.__dict__.pop(name, None)
        run.config = config
        run.parts = dataclasses.replace(self.parts, config=config)
        run.init_key, run.loop_key, run.data_key, run.eval_key = root_keys(config.seed)
        return run


def _state_axes(state: steps.TrainState) -> steps.TrainState:
    """vmap axes of a stacked state: model axis 0 everywhere except the shared scalar step.

    Keeping the step unbatched keeps the epoch (step // steps_per_epoch) unbatched, so the
    `lax.cond` that redraws the permutation at an epoch boundary stays a branch instead of
    becoming a select that draws a permutation at every step.
    """
    return jax.tree.map(lambda _: 0, state).replace(step=None)


def make_vmapped_chunk_fn(
    run: Run, chunk_body: Callable[..., Any] | None = None
) -> Callable[..., Any]:
    """`run.chunk_body` (the function `run.chunk_fn` jits) vmapped over the model axis, jitted.

    Takes (state [stacked], perm [N, num_examples], perm_epoch [], train_images, train_labels,
    loop_keys [N], data_keys [N], betas [N], *, num_steps) and returns (state, perm, perm_epoch,
    metric sums: dict of [N]). Same XLA options as the single call; one compile per num_steps.

    `chunk_body` replaces `run.chunk_body` (same signature; its `beta` may be any pytree whose
    leaves have the leading model axis): models that differ in more than beta and seed
    (`vae_jax/k_sweep.py`).
    """
    chunk = run.chunk_body if chunk_body is None else chunk_body

    def vmapped(state, perm, perm_epoch, images, labels, loop_keys, data_keys, betas, *, num_steps):
        axes = _state_axes(state)
        return jax.vmap(
            functools.partial(chunk, num_steps=num_steps),
            in_axes=(axes, 0, None, None, None, 0, 0, 0),
            out_axes=(axes, 0, None, 0),
        )(state, perm, perm_epoch, images, labels, loop_keys, data_keys, betas)

    return jax.jit(
        vmapped,
        static_argnames=('num_steps',),
        donate_argnums=(0, 1),
        compiler_options=backends.compiler_options(backends.model_family(run.config)),
    )


def stack_states(states: list[steps.TrainState]) -> steps.TrainState:
    """N states at the same step -> one state with a leading model axis (the step stays [])."""
    steps_ = {int(s.step) for s in states}
    assert len(steps_) == 1, steps_
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[s.replace(step=None) for s in states])
    return stacked.replace(step=states[0].step)


def unstack_state(state: steps.TrainState, i: int) -> steps.TrainState:
    """Model i of a stacked state, as the state a separate run would hold."""
    return jax.tree.map(lambda a: a[i], state.replace(step=None)).replace(step=state.step)
