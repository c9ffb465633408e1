"""Only the native extension lives here; every other setting is in pyproject.toml.

``arctic_runtime.suffix._native`` is the C++ backend of suffix decoding: C++17 sources in
``runtime/arctic_runtime/suffix/native/`` (trie, cache, drafting, the engine's batch: no Python), bound
to Python by ``bindings.cpp`` with nanobind.

Why nanobind (over pybind11, the other maintained choice): its per-call overhead is a fraction of
pybind11's (the simulator and the per-request API make one call per request per step, and the
engine's one call per step reads numpy buffers through its ndarray views with no copy), its
ndarray type holds the array it views (the "no raw pointers into Python objects" rule), and it is
what Arctic Inference, the field's reference implementation, binds its suffix tree with. pybind11 is
header-only and would need nothing compiled besides our sources; nanobind's runtime library is one
combined source file (``nb_combined.cpp``) that we compile into the extension here, so plain
setuptools builds it (no CMake or scikit-build-core needed: ``pip install -e .`` / ``make setup``).
nanobind comes from the build requirements in pyproject.toml.

The extension is optional: without a C++17 compiler (or without nanobind, in a build without build
isolation) the install still succeeds and ``SuffixDecodingCache`` uses its pure-Python backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup

NATIVE = Path("runtime/arctic_runtime/suffix/native")
SOURCES = ["bindings.cpp", "batch.cpp", "cache.cpp", "memory.cpp", "speculate.cpp", "trie.cpp"]


def native_extension() -> list[Extension]:
    try:
        import nanobind
    except ImportError:
        print(
            "arctic-serve: nanobind is not installed (a build without build isolation?); the native suffix "
            "backend is skipped and the Python one is used",
            file=sys.stderr,
        )
        return []
    nb_root = Path(nanobind.source_dir()).parent
    return [
        Extension(
            "arctic_runtime.suffix._native",
            sources=[str(NATIVE / name) for name in SOURCES] + [str(nb_root / "src" / "nb_combined.cpp")],
            include_dirs=[str(NATIVE), nanobind.include_dir(), str(nb_root / "ext" / "robin_map" / "include")],
            depends=[str(p) for p in sorted(NATIVE.glob("*.h"))],
            language="c++",
            optional=True,
            # -ffp-contract=off: no fused multiply-add, so the float results equal the Python reference's
            # bit for bit on every architecture. -fno-strict-aliasing: nanobind's runtime needs it (its
            # own CMake build sets it); -fvisibility=hidden: nanobind's symbols stay private to this module;
            # NB_COMPACT_ASSERTIONS: nanobind's release-build setting.
            extra_compile_args=[
                "-O2",
                "-std=c++17",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-fvisibility=hidden",
                "-DNB_COMPACT_ASSERTIONS",
            ],
        )
    ]


setup(ext_modules=native_extension())
