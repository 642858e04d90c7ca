"""Shared by the one-pass posterior tests of the protocol models (two_layer_test, flows_test)."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from vae_jax import steps


def batch_loss(model: Any, data_shape: tuple[int, ...], objective: str, one_pass: bool, **options):
    """params -> the train step's mean loss on a fixed batch of 3, with or without the one pass.

    Jitted: the value and gradient of each path compile once instead of running op by op.
    """
    config = default.get_config()
    config.objective = objective
    for name, value in options.items():
        setattr(config, name, value)
    static = steps.StepConfig.from_config(config, data_shape, model)
    assert static.one_pass_posterior, type(model).__name__  # the model has the member
    static = dataclasses.replace(static, one_pass_posterior=one_pass)
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.integers(0, 2, size=(3, *data_shape)), jnp.float32)
    labels = jnp.zeros((3,), jnp.int32)

    def loss(params):
        terms, _ = steps.batch_terms(
            params,
            {},
            jax.random.key(6),
            images,
            labels,
            jnp.float32(0.8),
            apply_fn=model.apply,
            static=static,
            train=True,
        )
        return jnp.mean(terms['loss'])

    return jax.jit(jax.value_and_grad(loss))
