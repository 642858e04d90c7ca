"""A fingerprint of the compiled training program of each benchmark workload, for redesign gates.

Run from the root of a checkout, once in the old one and once in the new (the same environment):

  python -m benchmarks.hlo_fingerprint --workloads W1,W2,W4-k1,W4-k5 --out_dir /tmp/hlo_new

For each workload it compiles `trainer.Run(config).chunk_fn` exactly as `benchmarks/run.py` times
it (random data, the workload's steps per call), takes XLA's optimised HLO text, removes what
names the source rather than the program (the file, function and stack-frame tables, `metadata=`
and `stack_frame_id=` attributes, the module's name), and prints its SHA-256 beside the number of
`dot` and `fusion` instructions. Two checkouts that print the same hash run the same program on
this backend, so their step times differ only by noise; `diff` the files written to `--out_dir`
where they do not.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

_SOURCE_TABLES = ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames')


def normalised_hlo(text: str) -> str:
    """`compiled.as_text()` without the parts that depend on source paths and line numbers."""
    kept, in_table = [], False
    for line in text.split('\n'):
        if line in _SOURCE_TABLES:
            in_table = True
            continue
        # Table rows start with an index; the first line that does not ends the table.
        if in_table and not (line[:1].isdigit() or line.startswith(' ') or not line):
            in_table = False
        if not in_table:
            kept.append(line)
    text = '\n'.join(kept)
    text = re.sub(r', metadata=\{[^}]*\}', '', text)
    text = re.sub(r', stack_frame_id=\d+', '', text)
    return re.sub(r'^HloModule [^,]*', 'HloModule module', text, flags=re.M)


def compiled_chunk_text(workload: str) -> str:
    """The optimised HLO of vae_jax's chunk for `workload`, as `benchmarks.run` calls it."""
    from benchmarks.run import JaxTrainer

    t = JaxTrainer(workload)
    args = (
        t.state,
        t.perm,
        t.perm_epoch,
        t.train_images,
        t.train_labels,
        t.run.loop_key,
        t.run.data_key,
        t.beta,
    )
    return t.chunk_fn.lower(*args, num_steps=t.steps_per_call).compile().as_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workloads', default='W1,W2,W4-k1,W4-k5')
    parser.add_argument('--out_dir', default=None, help='write each normalised HLO text here')
    args = parser.parse_args()
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    print(f'{"workload":8} {"sha256[:16]":16} {"dots":>5} {"fusions":>8}')
    for workload in args.workloads.split(','):
        text = normalised_hlo(compiled_chunk_text(workload))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        print(f'{workload:8} {digest:16} {text.count(" dot("):5} {text.count(" fusion("):8}')
        if out_dir:
            (out_dir / f'{workload}.hlo.txt').write_text(text)


if __name__ == '__main__':
    main()
