"""`python -m layerprobe.probe.fused.build`: compile the fused probe kernel next to its source.

Run by `make venv` and `make venv-keras` (the install steps). It never fails the install: without a
compiler, or if the build fails, it prints one line and the probe uses its pure-TensorFlow path. An
up-to-date library is kept. One library per TensorFlow version (`_summaries-tf2.15.1.so`): a custom op
is bound to the TensorFlow it was compiled against, and the two venvs share this source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "summaries.cc"
TF_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos")


def tensorflow_version() -> str:
    """The installed TensorFlow's version, read from package metadata (no TensorFlow import)."""
    for name in TF_DISTRIBUTIONS:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


LIBRARY = HERE / f"_summaries-tf{tensorflow_version()}.so"  # gitignored; loaded by layerprobe.probe.fused


def command(compiler: str, output: Path) -> list[str]:
    """The g++ command line: TensorFlow's own compile and link flags (they carry its C++ ABI)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return [
        compiler,
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-O3",
        "-march=native",  # built where it runs: the widest vectors this CPU has for the per-unit loop
        # The kernel is float32 only; Eigen's AVX512-FP16 code in TensorFlow 2.21's headers does not
        # compile with g++ 12 ("expected initializer before '<'" in PacketMathFP16.h)
        "-mno-avx512fp16",
        "-fopenmp-simd",  # honours `#pragma omp simd` (no OpenMP runtime)
        "-fno-trapping-math",  # lets the compiler turn the NaN/Inf selects into vector blends
        *tf.sysconfig.get_compile_flags(),
        str(SOURCE),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def build(force: bool = False) -> tuple[bool, str]:
    """Compile the library if it is missing or older than its source: (built or up to date, one line)."""
    if not force and LIBRARY.exists() and LIBRARY.stat().st_mtime >= max(SOURCE.stat().st_mtime, _mtime(__file__)):
        return True, f"fused probe kernel up to date: {LIBRARY}"
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return False, "fused probe kernel not built (no C++ compiler found): the probe uses its TensorFlow path"
    partial = LIBRARY.with_suffix(".so.partial")  # a failed build leaves no half-written library behind
    done = subprocess.run(command(compiler, partial), capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
        return False, f"fused probe kernel not built ({first}): the probe uses its TensorFlow path"
    partial.replace(LIBRARY)
    return True, f"fused probe kernel built: {LIBRARY}"


def _mtime(path: str) -> float:
    return Path(path).stat().st_mtime


def main() -> int:
    ok, line = build(force="--force" in sys.argv)
    print(line)  # the install's one line about the kernel
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
