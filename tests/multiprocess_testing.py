"""Runs a Python script on several XLA:CPU devices, or as two processes of one JAX cluster.

Shared by the data-parallel tests (tests/multidevice_test.py) and the streamed pipeline's
two-process test (tests/streaming_test.py). The environment drops the caller's JAX_* (and
cluster-manager) variables, so a child sees exactly the devices and processes asked for.
"""

import os
import socket
import subprocess
import sys

# The first lines of the tests' child scripts: no torch import (tensorboardX imports torch when
# it is installed, 2 s per process, unused here), then jax compiling as in tests/conftest.py.
PRELUDE = r"""
import sys


class _NoTorch:  # tensorboardX imports torch when installed: 2 s per process, unused here.
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ImportError('torch is not needed here')


sys.meta_path.insert(0, _NoTorch())
import jax

jax.config.update('jax_disable_most_optimizations', True)  # As tests/conftest.py: same numbers.
"""


def device_env(num_devices: int, **extra: str) -> dict[str, str]:
    """This process's environment for a child with `num_devices` CPU devices, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'SLURM_', 'OMPI_'))}
    flags = f'--xla_force_host_platform_device_count={num_devices}'
    return {**env, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': flags, **extra}


def run_script(test, code: str, args: list[str], num_devices: int) -> subprocess.CompletedProcess:
    """Runs `python -c code *args` in the repository root on `num_devices` CPU devices;
    asserts that it exits 0."""
    proc = subprocess.run(
        [sys.executable, '-c', code, *args],
        cwd=_REPO,
        env=device_env(num_devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    test.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc


def run_two_processes(test, code: str, args: list[str], env: dict[str, str]) -> list[str]:
    """Runs `python -c code *args` as processes 0 and 1 of one JAX cluster, with `env` (e.g.
    `device_env(2)`) and a coordinator on a free local port; asserts both exit 0 and returns
    their standard outputs."""
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    cluster = {'JAX_COORDINATOR_ADDRESS': f'localhost:{port}', 'JAX_NUM_PROCESSES': '2'}
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', code, *args],
            cwd=_REPO,
            env={**env, **cluster, 'JAX_PROCESS_ID': str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        test.assertEqual(proc.returncode, 0, err[-3000:])
    return [out for out, _ in outputs]


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
