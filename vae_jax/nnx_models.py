"""Flax NNX models in the functional form the library uses for every model.

vae_jax sees a model through `protocol.LatentVariableModel` and calls it the Linen way:
`model.init(key, ...) -> {'params', maybe 'batch_stats'}` and `model.apply(variables, *args,
method=..., mutable=...)`, inside the jitted step, on pure pytrees. `NNXModel` gives an
`nnx.Module` that form ONCE, outside the step: `nnx.split` into a graph definition and its state
(the `nnx.Param` variables are the 'params' collection, the `nnx.BatchStat` variables
'batch_stats'), and `apply` merges them back (`nnx.merge`) inside the traced function and calls
the method. The merge is Python that runs while the step is traced, never per step: the
compiled step, the train state, checkpoints, sweeps (vmapped over stacked parameters) and
`vae_jax.load` see only nested dicts of arrays, exactly as for a Linen module.

Two ways in:
  - From Python, a constructed module: `trainer.train_and_evaluate(config, workdir,
    model=MyNNXVAE(..., rngs=nnx.Rngs(params=0)))`. Its parameters are the ones it was
    constructed with (the run's seed does not re-initialise them; a run's seed still sets the
    noise, the data order and evaluation).
  - By import path, `model.module='pkg.mod:MyNNXVAE'` with `model.module_kwargs`: the library
    constructs `MyNNXVAE(**module_kwargs, rngs=nnx.Rngs(params=params_seed(init_key)))`, with
    the run's `init_key` (`build.root_keys(config.seed)[0]`), so the same seed gives the same
    parameters and each model of a seed sweep its own. `build.nnx_rngs(seed)` is that `Rngs`,
    for building the same module from Python.

Models contain no randomness (the library draws the noise), so a module must not keep an
`nnx.Rngs` or other non-parameter state besides `nnx.BatchStat`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The library's variable collections and the NNX variable types that fill them.
COLLECTIONS = (('params', nnx.Param), ('batch_stats', nnx.BatchStat))


def is_nnx_class(obj: Any) -> bool:
    """True for a subclass of `nnx.Module` (what `model.module` may name)."""
    return isinstance(obj, type) and issubclass(obj, nnx.Module)


def params_seed(key: jax.Array) -> int:
    """The int seed of `nnx.Rngs(params=...)` for a module built from a run's `init_key`.

    Raises:
      ValueError: `key` is traced (under jit or vmap): the module's constructor needs an int.
    """
    try:
        with jax.ensure_compile_time_eval():
            return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    except jax.errors.ConcretizationTypeError as e:
        raise ValueError(
            'an NNX module built by import path is initialised from a concrete key; do not call '
            'its init under jax.jit or jax.vmap.'
        ) from e


def _split(module: nnx.Module, where: str) -> tuple[Any, dict[str, Any]]:
    """(graph definition, {collection: pure dict}) of a module; the empty collections left out."""
    graphdef, *states, rest = nnx.split(module, *(t for _, t in COLLECTIONS), ...)
    if jax.tree.leaves(rest):
        kinds = sorted({type(v).__name__ for _, v in nnx.to_flat_state(rest)})
        raise ValueError(
            f'{where}: {type(module).__name__} holds variables other than nnx.Param and '
            f'nnx.BatchStat ({", ".join(kinds)}); vae_jax models contain no randomness (the '
            'library draws the noise), so do not keep nnx.Rngs or other state in the module.'
        )
    variables = {}
    for (name, _), state in zip(COLLECTIONS, states, strict=True):
        if jax.tree.leaves(state):
            variables[name] = nnx.to_pure_dict(state)
    return graphdef, variables


class NNXModel:
    """An `nnx.Module` with Linen's functional interface (`init`, `apply`), adapted once.

    The adapter has the module's `latent_shapes`, its other public attributes (e.g.
    `standard_normal_prior`) and, as members, the names of its public methods, so
    `protocol.capabilities` finds the optional ones (`decode_mean`, `sample_prior`, ...).
    Those members only mark presence: call a method through `apply(variables, ...,
    method=name)`.

    Attributes:
      graphdef: the module's `nnx.GraphDef` (structure and static attributes, no arrays).
      module_class: the wrapped class.
    """

    def __init__(
        self,
        module: nnx.Module | None = None,
        *,
        factory: Callable[[int], nnx.Module] | None = None,
        where: str = 'model',
    ):
        """Adapts `module` (a constructed module), or builds modules with `factory(seed)`.

        Args:
          module: a constructed module; `init` returns the parameters it holds.
          factory: seed -> module instead (`from_class`); `init(key)` calls it with
            `params_seed(key)`. The structure comes from an abstract instance (no arrays made).
          where: how errors name the model.

        Raises:
          ValueError: neither or both given, or the module holds state besides parameters and
            BatchNorm statistics.
        """
        if (module is None) == (factory is None):
            raise ValueError('NNXModel: give exactly one of module and factory.')
        self._factory = factory
        self._where = where
        if module is None:
            module = nnx.eval_shape(lambda: factory(0))
            self._variables = None
        self._module = module  # Read for attributes only; never called.
        self.graphdef, variables = _split(module, where)
        if factory is None:
            self._variables = variables
        self.module_class = type(module)

    @classmethod
    def from_class(cls, module_class: type, kwargs: dict[str, Any], where: str) -> NNXModel:
        """`module_class(**kwargs, rngs=nnx.Rngs(params=seed))`, seeded by `init`'s key.

        Raises:
          ValueError: kwargs name `rngs` (the library supplies it), or the class does not take
            them.
        """
        if 'rngs' in kwargs:
            raise ValueError(
                f'{where}: do not pass rngs in model.module_kwargs; the library supplies '
                'rngs=nnx.Rngs(params=<seed from the run>) to an NNX module.'
            )

        def factory(seed: int) -> nnx.Module:
            return module_class(**kwargs, rngs=nnx.Rngs(params=seed))

        try:
            return cls(factory=factory, where=where)
        except TypeError as e:
            raise ValueError(f'{where} with model.module_kwargs={kwargs!r}: {e}') from e

    def __repr__(self) -> str:
        return f'NNXModel({self.module_class.__name__})'

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._module.latent_shapes

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the adapter lacks: the module's public attributes and methods.
        module = self.__dict__.get('_module')
        if name.startswith('_') or module is None:
            raise AttributeError(name)
        attr = getattr(type(module), name, None)
        if callable(attr) and not isinstance(attr, type):
            return functools.partial(self._unbound, name)
        return getattr(module, name)

    def _unbound(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f'{self!r}.{name}: call it with its variables, '
            f'model.apply(variables, ..., method={name!r}).'
        )

    def init(self, key: jax.Array, *args: Any, method: Any = None, **kwargs: Any) -> dict:
        """The module's variables, {'params': ..., maybe 'batch_stats': ...}, as pure dicts.

        Args:
          key: the run's init key; it seeds a module built by import path (`params_seed`) and
            is unused for a constructed module (its own parameters are returned, copied so that
            a donated train state leaves them intact).
          *args: accepted for Linen's signature; NNX modules create their parameters when
            constructed, so nothing is called.
          method: likewise accepted and unused.
          **kwargs: likewise accepted and unused.
        """
        del args, method, kwargs
        if self._factory is None:
            return jax.tree.map(jnp.array, self._variables)
        graphdef, variables = _split(self._factory(params_seed(key)), self._where)
        if graphdef != self.graphdef:
            raise ValueError(
                f'{self._where}: {self.module_class.__name__} built with different seeds has '
                'different structures; its structure must not depend on its rngs.'
            )
        return variables

    def apply(
        self,
        variables: dict[str, Any],
        *args: Any,
        method: str | Callable[..., Any] | None = None,
        mutable: bool | str | list[str] = False,
        rngs: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Calls `method` of the module holding `variables`, as Linen's `apply` does.

        Args:
          variables: {'params': ..., maybe 'batch_stats': ...} (pure dicts, may be traced).
          *args: the method's positional arguments.
          method: a method name, a function `fn(module, *args, **kwargs)`, or None (`__call__`).
          mutable: collections whose new values to return ('batch_stats' after a training
            pass), or False.
          rngs: not supported (models contain no randomness); must be None.
          **kwargs: the method's keyword arguments.

        Returns:
          the method's output, or (output, {collection: new values}) when `mutable` names
          collections.
        """
        if rngs is not None:
            raise ValueError(f'{self!r}.apply: rngs are not supported; the library draws noise.')
        module = nnx.merge(self.graphdef, *(variables.get(name, {}) for name, _ in COLLECTIONS))
        if method is None:
            out = module(*args, **kwargs)
        elif callable(method):
            out = method(module, *args, **kwargs)
        else:
            out = getattr(module, method)(*args, **kwargs)
        if not mutable:
            return out
        names = [mutable] if isinstance(mutable, str) else None if mutable is True else mutable
        _, new = _split(module, self._where)
        return out, {k: v for k, v in new.items() if names is None or k in names}
