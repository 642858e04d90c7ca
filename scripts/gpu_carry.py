"""Gathers what a bare GPU machine needs to run vae_jax: wheels of the missing packages, and data.

The GPU image we run on (Python 3.12, CUDA jax, flax, optax, orbax, torch, no network) lacks
distrax, tfp-nightly, ml-collections, tensorflow-datasets, array_record and tensorboardX and some
of their dependencies. This script resolves that set from the packages installed in *this*
environment (the exact versions the tests pass with), downloads their wheels without
dependencies into an ignored folder, copies a prepared TFDS data dir beside them, and checks the
total against the 64 MiB that may travel with the working tree.

    python scripts/gpu_carry.py --data_dir /path/to/tfds        # -> .carry/wheels, .carry/tfds
    python scripts/gpu_carry.py --list                            # name==version lines only

Then, on the GPU machine, from the repository root (with .carry travelling alongside):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .carry/wheels/*.whl && export PYTHONPATH=/tmp/site \\
        TFDS_DATA_DIR=$PWD/.carry/tfds && python3 -m benchmarks.run --backend gpu
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# What vae_jax imports that the GPU image lacks (tfp-nightly is the TensorFlow Probability that
# distrax pulls in).
ROOTS = (
    'distrax',
    'tfp-nightly',
    'ml-collections',
    'tensorflow-datasets',
    'array-record',
    'tensorboardX',
)
# Python packages the GPU image already has (its package list, 2026-11-17); never carried, so
# the image's CUDA builds of jax/jaxlib and its numpy stay in charge.
DEVICE_HAS = frozenset(
    canonicalize_name(n)
    for n in """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
    psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
    shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
    torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
    wheel wrapt xarray xxhash yarl zipp
    """.split()
)
DEVICE_PYTHON = '3.12'
# The device tool's limit on what travels: the working tree plus carried paths.
CARRY_LIMIT_BYTES = 64 * 2**20
PLATFORMS = [f'manylinux_2_{n}_x86_64' for n in (39, 35, 34, 31, 28, 27, 24, 17)]
PLATFORMS += ['manylinux2014_x86_64', 'manylinux1_x86_64', 'linux_x86_64']


def carry_list(
    roots: tuple[str, ...] = ROOTS, present: frozenset[str] = DEVICE_HAS
) -> list[tuple[str, str]]:
    """The packages to carry: `roots` and their dependencies, less what the device has.

    Dependencies are read from the installed distributions' metadata, with environment markers
    evaluated for the device's Python (extras off).

    Args:
      roots: distribution names.
      present: canonical names the device already has.

    Returns:
      [(distribution name as installed, installed version)], sorted by canonical name.

    Raises:
      ValueError: a root or a needed dependency is not installed here.
    """
    env = {**default_environment(), 'python_version': DEVICE_PYTHON, 'extra': ''}
    found: dict[str, tuple[str, str]] = {}
    queue = list(roots)
    while queue:
        name = queue.pop()
        key = canonicalize_name(name)
        if key in found or key in present:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as e:
            raise ValueError(
                f'{name!r} (needed on the GPU machine) is not installed in {sys.prefix}; run '
                "this script with the project environment's python"
            ) from e
        found[key] = (dist.metadata['Name'], dist.version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                queue.append(req.name)
    return [found[k] for k in sorted(found)]


def download_command(packages: list[tuple[str, str]], dest: Path) -> list[str]:
    """`pip download` of exactly these versions as wheels for the device's Python and platform."""
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:']
    cmd += ['--python-version', DEVICE_PYTHON, '--implementation', 'cp', '-d', str(dest)]
    for platform in PLATFORMS:
        cmd += ['--platform', platform]
    return cmd + [f'{name}=={version}' for name, version in packages]


def wheel_command(name: str, version: str, dest: Path) -> list[str]:
    """`pip wheel` of one source release (no dependencies) into `dest`."""
    return [
        sys.executable,
        '-m',
        'pip',
        'wheel',
        '--no-deps',
        '-w',
        str(dest),
        f'{name}=={version}',
    ]


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the files that travel with the working tree (tracked and untracked, not ignored)."""
    out = subprocess.run(
        ['git', '-C', str(repo), 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        capture_output=True,
        check=True,
    ).stdout
    paths = [repo / p for p in out.decode().split('\0') if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(REPO / '.carry'), help='an ignored folder')
    parser.add_argument(
        '--data_dir',
        default=os.environ.get('TFDS_DATA_DIR'),
        help='a prepared TFDS data dir (default $TFDS_DATA_DIR); omit for benchmarks only',
    )
    parser.add_argument('--datasets', default='mnist', help='comma-separated, under --data_dir')
    parser.add_argument('--list', action='store_true', help='print name==version and stop')
    args = parser.parse_args(argv)

    packages = carry_list()
    if args.list:
        print('\n'.join(f'{n}=={v}' for n, v in packages))
        return
    out = Path(args.out)
    wheels = out / 'wheels'
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    for name, version in packages:
        if subprocess.run(download_command([(name, version)], wheels)).returncode:
            # No wheel on the index (promise 2.3 is a source release): build a pure-Python wheel
            # here; one with compiled code would not match the device's Python and is refused.
            print(f'{name}=={version}: no wheel for Python {DEVICE_PYTHON}; building one')
            subprocess.run(wheel_command(name, version, wheels), check=True)
            built = list(wheels.glob(f'{canonicalize_name(name).replace("-", "_")}-*.whl'))
            if not built or not all(w.name.endswith('-py3-none-any.whl') for w in built):
                raise SystemExit(f'{name}=={version}: built {built}, not a pure-Python wheel')
    if args.data_dir:
        for name in filter(None, args.datasets.split(',')):
            source = Path(args.data_dir) / name
            if not source.is_dir():
                raise ValueError(
                    f'--data_dir: {source} is not a prepared TFDS data set (no such folder); '
                    f'give the folder that holds {name}/<version>/'
                )
            target = out / 'tfds' / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target)
    carried, tree = folder_bytes(out), tree_bytes()
    total = carried + tree
    print(
        f'{out}: {carried / 2**20:.1f} MiB; working tree {tree / 2**20:.1f} MiB; together '
        f'{total / 2**20:.1f} of {CARRY_LIMIT_BYTES / 2**20:.0f} MiB'
    )
    if total > CARRY_LIMIT_BYTES:
        raise SystemExit(
            f'too large to travel: {total / 2**20:.1f} MiB > 64 MiB; carry fewer data sets '
            '(--datasets), or none for the benchmarks (they use random data)'
        )


if __name__ == '__main__':
    main()
