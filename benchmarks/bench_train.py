"""Wall time of a training recipe, end to end, as `maskwatch train` runs it.

    python benchmarks/bench_train.py ../shared/datasets/observations --repeat 1
    python benchmarks/bench_train.py ../shared/datasets/observations ../shared/datasets/ilc \
        ../shared/datasets/rmfd:mask --recipe real

Prints each run's seconds, the median, and the machine. Outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from machine import describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--recipe", default="seed", choices=("seed", "real"))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    seconds = []
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "maskwatch.cli",
                    "-q",
                    "train",
                    *args.data,
                    "--recipe",
                    args.recipe,
                    "--out",
                    out,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds.append(time.perf_counter() - started)
        print(f"run {run + 1}: {seconds[-1]:.1f} s", flush=True)
    print(f"machine: {describe_machine()}")
    print(
        f"recipe {args.recipe} on {' '.join(args.data)}: median {statistics.median(seconds):.1f} s "
        f"over {len(seconds)} run(s)"
    )


if __name__ == "__main__":
    main()
