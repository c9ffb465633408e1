"""Only the native extension lives here; every other setting is in pyproject.toml.

``arctic_runtime.suffix._native`` is the C++ backend of suffix decoding (plain CPython C API, no
build dependency beyond setuptools and a C++17 compiler). It is optional: without a compiler the
install still succeeds and ``SuffixDecodingCache`` uses its pure-Python backend.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "arctic_runtime.suffix._native",
            sources=["runtime/arctic_runtime/suffix/_native.cpp"],
            language="c++",
            optional=True,
            # -ffp-contract=off: no fused multiply-add, so the float results equal the Python
            # reference's bit for bit on every architecture.
            extra_compile_args=["-O2", "-std=c++17", "-ffp-contract=off"],
        )
    ],
)
