"""The backend-parity tests as other CPUs would run them: `make test-portable` (all rows), and
`--quick` (one row, the float32 comparisons of the fused backend) inside `make test`.

torch, oneDNN and MKL choose their kernels per CPU (AVX-512 and AMX on one machine, AVX2 on the
next), and rnnkit's own kernels are compiled for the CPU they run on: each choice sums in its own
order, so float32 results differ in the last bits from one machine to another. One machine can
imitate older ones:

    ATEN_CPU_CAPABILITY       torch's own vector kernels: default | avx2 | avx512
    ONEDNN_MAX_CPU_ISA        oneDNN's (torch's LSTM, rnnkit's input projection): SSE41 ... AVX512_CORE_AMX
    MKL_ENABLE_INSTRUCTIONS   MKL's GEMMs: SSE4_2 | AVX2 | AVX512
    --kernel-cpu              gcc -march of rnnkit's kernels (tests/conftest.py)
    --torch-threads           intra-op threads (changes how reductions are split)

Each row runs only where this CPU has the instructions it names. The ATen capability each row
really got is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent

#: the tests that compare a fast path with the reference (or torch.nn) in float32
PARITY_TESTS = ["tests/backends", "tests/test_parity_torch.py", "tests/test_hypothesis.py", "tests/test_recurrent.py",
                "tests/cells/test_cells.py", "tests/test_regularisation.py", "tests/export/test_step_api.py"]
#: the cheap subset `make test` runs under one imitated CPU
QUICK_TESTS = ["tests/backends/test_fused.py", "-k", "f32 or zoneout or float32 or larger or route or random"]


@dataclass(frozen=True)
class Row:
    name: str
    needs: frozenset = frozenset()  # /proc/cpuinfo flags the row needs
    env: Dict[str, str] = field(default_factory=dict)
    kernel_cpu: Optional[str] = None
    threads: int = 1

    def runs_here(self, flags: Set[str]) -> bool:
        return self.needs <= flags


AVX512 = dict(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="AVX512_CORE", MKL_ENABLE_INSTRUCTIONS="AVX512")
AVX2 = dict(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
SSE = dict(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41", MKL_ENABLE_INSTRUCTIONS="SSE4_2")

ROWS = [
    Row("this CPU, 1 thread"),
    Row("this CPU, 2 threads", threads=2),
    Row("AVX-512 without AMX/BF16", frozenset({"avx512f", "avx512bw", "avx512vl"}), AVX512, "x86-64-v4"),
    Row("AVX2 (e.g. AMD EPYC Zen 2/3), 1 thread", frozenset({"avx2", "fma"}), AVX2, "x86-64-v3"),
    Row("AVX2, 2 threads", frozenset({"avx2", "fma"}), AVX2, "x86-64-v3", threads=2),
    Row("SSE4.2 baseline", frozenset({"sse4_2"}), SSE, "x86-64-v2"),
]


def cpu_flags() -> Set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def capability(env: Dict[str, str]) -> str:
    """The ATen CPU capability a process started with `env` really gets."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return done.stdout.strip() or f"? ({done.stderr.strip()[-200:]})"


def run_row(row: Row, tests: List[str]) -> bool:
    env = {**os.environ, **row.env}
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow",
            f"--torch-threads={row.threads}", *tests]
    if row.kernel_cpu:
        args.append(f"--kernel-cpu={row.kernel_cpu}")
    if row.threads == 1:
        args += ["-n", "2"]
    print(f"\n=== {row.name}: ATen capability {capability(env)}, "
          f"{' '.join(f'{k}={v}' for k, v in row.env.items()) or 'no ISA limits'}, "
          f"kernels -march={row.kernel_cpu or 'native'}, {row.threads} thread(s)", flush=True)
    start = time.monotonic()
    ok = subprocess.run(args, cwd=ROOT, env=env).returncode == 0
    print(f"=== {row.name}: {'passed' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s", flush=True)
    return ok


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one imitated CPU, the fused float32 comparisons only")
    args = parser.parse_args(argv)
    flags = cpu_flags()
    here = [row for row in ROWS if row.runs_here(flags)]
    skipped = [row.name for row in ROWS if not row.runs_here(flags)]
    if skipped:
        print(f"not run (this CPU lacks the instructions): {', '.join(skipped)}")
    if args.quick:  # AVX2 where this CPU has it (the most common other x86 CPU), else what runs here
        quick = [row for row in here if row.env is AVX2 and row.threads == 1]
        here, tests = quick or here[:1], QUICK_TESTS
    else:
        tests = PARITY_TESTS
    results = [run_row(row, tests) for row in here]
    failed = [row.name for row, ok in zip(here, results) if not ok]
    if failed:
        print(f"failed rows: {', '.join(failed)}")
    print(f"portability: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
