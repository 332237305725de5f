"""How long ``camonnx --help`` and ``camonnx explain --help`` take, now and at an earlier commit.

Each row is the median wall time of a fresh interpreter running the command's help (what a user
waits for), next to ``python -c pass`` (the interpreter's own start-up) measured in the same run.
The earlier commit (``--before REV``, default: the one before the lazy command line) is checked
out into a temporary git worktree and run from there; its compiled kernels package comes from the
installed camonnx, which is the same code. Writes the "cli-help" section of bench/RESULTS.md.

    python bench/bench_cli_help.py [--before REV] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import machine, table, write_section

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"camonnx --help": [], "camonnx explain --help": ["explain"]}


def seconds(code: str, cwd: Path, repeat: int) -> float:
    """Median wall seconds of ``python -c code`` run from ``cwd`` (one warm-up run first)."""
    times = []
    for n in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True)
        if n:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def help_code(argv: list[str]) -> str:
    return (f"from camonnx.cli import main\ntry:\n    main({argv + ['--help']!r})\n"
            "except SystemExit:\n    pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="adb76cf",
                        help="the commit to compare with (default: adb76cf, before this change)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    startup = seconds("pass", ROOT, args.repeat)
    with tempfile.TemporaryDirectory(prefix="camonnx-before-") as folder:
        before = Path(folder) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            rows = []
            for name, argv in COMMANDS.items():
                then = seconds(help_code(argv), before, args.repeat)
                now = seconds(help_code(argv), ROOT, args.repeat)
                rows.append([name, f"{then:.2f}", f"{now:.2f}", f"{then / now:.1f}×"])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False, capture_output=True)
    body = "\n".join([
        "## Command-line help (bench/bench_cli_help.py)",
        "",
        f"Machine: {machine()}",
        "",
        f"Median of {args.repeat} fresh interpreters each; `python -c pass` takes {startup:.2f} s "
        f"in the same run. Before: commit {args.before} (the method list imported torch, Numba "
        "and ONNX to build `--method`).",
        "",
        table(["command", f"before ({args.before}) s", "now s", "speed-up"], rows),
        "",
        "Target: ≤ 0.3 s. `tests/test_public_api.py` checks that no help imports torch, Numba, "
        "ONNX, ONNX Runtime, numpy, matplotlib, PIL or SciPy.",
    ])
    print(body)
    write_section("cli-help", body)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
