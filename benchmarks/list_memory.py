"""Worker memory of reading one list unit from a Parquet list written in 1M-row row groups.

Writes a list of 2 M rows (path + a 200-character caption) in two 1 M-row groups, then,
in a fresh interpreter per case, expands one unit of ``--shard-size`` rows from the
middle of the second group (``pipeline.units.iter_unit``, what a worker does) and
reports the peak RSS over the interpreter's RSS after imports. ``--tree`` runs another
checkout's code (e.g. one exported from main) for a before/after figure.

    python -m benchmarks.list_memory --shard-size 1000 [--tree /tmp/main_tree]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT

ROWS, GROUP = 2_000_000, 1_000_000

CHILD = """
import sys, time
import pyarrow.parquet
from pipeline.units import Unit, iter_unit
def status(field):  # VmRSS now, VmHWM peak (ru_maxrss would count the parent's peak)
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) / 1e3
base = status("VmRSS:")
url, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
began = time.perf_counter()
refs = list(iter_unit(Unit(0, "list", url=url, ns="big", start=start, stop=stop)))
seconds = time.perf_counter() - began
assert len(refs) == stop - start and refs[0].rel == f"img/{start:07d}.jpg", refs[0]
peak = status("VmHWM:")
print(f"{base:.0f} {peak:.0f} {seconds:.2f}")
"""


def write_list(path: Path) -> None:
    """2 M rows in 1 M-row groups: ``img/0000000.jpg``... and 200-character captions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("path", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, ROWS, GROUP):
            paths = [f"img/{i:07d}.jpg" for i in range(first, first + GROUP)]
            captions = [f"{i:07d} a photo of a dog on a sofa, " + "x" * 160 for i in range(first, first + GROUP)]  # fmt: skip
            writer.write_table(pa.table({"path": paths, "caption": captions}, schema=schema),
                               row_group_size=GROUP)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--tree", default=str(ROOT), help="checkout whose pipeline/ to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        write_list(path)
        start = GROUP + GROUP // 2
        env = {**os.environ, "PYTHONPATH": args.tree}
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(start),
                              str(start + args.shard_size)], env=env, cwd=args.tree, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        base, peak, seconds = map(float, out)
        print(f"{path.stat().st_size / 1e6:.0f} MB list, unit of {args.shard_size} rows at row "
              f"{start}: RSS after imports {base:.0f} MB, peak {peak:.0f} MB "
              f"(+{peak - base:.0f} MB), {seconds:.2f} s  [{args.tree}]")  # fmt: skip


if __name__ == "__main__":
    main()
