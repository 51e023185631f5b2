"""Benchmark: how long the command line takes to start (``python train.py --help``).

Prints, from one run, the median wall time of ``python train.py --help`` and of importing
``occaist.cli`` (the project's import time, Hydra included) over ``--repeats`` fresh interpreters,
next to a bare ``import hydra`` for scale. The typed schemas come from their JSON cache
(``~/.cache/occaist``), which the first call builds (seconds: it imports every target).

    python scripts/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median_s(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)  # warm (schema cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = {
        "python -c 'import hydra'": [sys.executable, "-c", "import hydra"],
        "python -c 'import occaist.cli'": [sys.executable, "-c", "import occaist.cli"],
        "python train.py --help": [sys.executable, "train.py", "--help"],
    }
    print(f"median wall time of {args.repeats} fresh interpreters")
    print("| command | seconds |")
    print("|---|---|")
    for name, cmd in rows.items():
        print(f"| `{name}` | {_median_s(cmd, args.repeats):.2f} |")


if __name__ == "__main__":
    main()
