"""Only the native extension lives here; every other setting is in pyproject.toml.

``arctic_runtime.suffix._native`` is the C++ backend of suffix decoding: C++17 sources in
``runtime/arctic_runtime/suffix/native/`` (memory, trie, drafting, cache, the engine's batch: no
Python), bound to Python by ``bindings.cpp`` with nanobind.

Why nanobind (over pybind11, the other maintained choice): its per-call overhead is a fraction of
pybind11's (the simulator and the per-request API make one call per request per step), its ndarray
type views DLPack arrays (CPU torch tensors) while holding them, and it is what Arctic Inference,
the field's reference implementation, binds its suffix tree with. pybind11 is header-only and would
need nothing compiled besides our sources; nanobind's runtime library is one combined source file
(``nb_combined.cpp``), which ``build_ext`` below compiles into the extension, so plain setuptools
builds it (no CMake or scikit-build-core: ``pip install -e .`` / ``make setup`` as before). nanobind
comes from the build requirements in pyproject.toml (pinned).

The extension is optional: without a C++17 compiler (or without nanobind, in a build without build
isolation) the install still succeeds and ``SuffixDecodingCache`` uses its pure-Python backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = Path("runtime/arctic_runtime/suffix/native")
SOURCES = ["bindings.cpp", "batch.cpp", "cache.cpp", "memory.cpp", "speculate.cpp", "trie.cpp"]


class BuildExt(build_ext):
    """Adds nanobind's runtime and headers at build time (not in the sources an sdist lists); skips
    the extension, with a warning, when nanobind cannot be imported."""

    def build_extensions(self) -> None:
        try:
            import nanobind
        except ImportError:
            print(
                "arctic-serve: nanobind is not installed (a build without build isolation?); the native "
                "suffix backend is skipped and the Python one is used",
                file=sys.stderr,
            )
            self.extensions = []
            return
        root = Path(nanobind.source_dir()).parent
        for ext in self.extensions:
            ext.sources.append(str(root / "src" / "nb_combined.cpp"))
            ext.include_dirs += [nanobind.include_dir(), str(root / "ext" / "robin_map" / "include")]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "arctic_runtime.suffix._native",
            sources=[str(NATIVE / name) for name in SOURCES],
            include_dirs=[str(NATIVE)],
            depends=[str(p) for p in sorted(NATIVE.glob("*.h"))],
            language="c++",
            optional=True,
            # -ffp-contract=off: no fused multiply-add, so the float results equal the Python reference's
            # bit for bit on every architecture. -fno-strict-aliasing: nanobind's runtime needs it (its
            # own CMake build sets it); -fvisibility=hidden: nanobind's symbols stay private to this
            # module; NB_COMPACT_ASSERTIONS: nanobind's release-build setting.
            extra_compile_args=[
                "-O2",
                "-std=c++17",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-fvisibility=hidden",
                "-DNB_COMPACT_ASSERTIONS",
            ],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
