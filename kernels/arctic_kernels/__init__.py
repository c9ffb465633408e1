"""Triton kernels used by the runtime, each beside a plain-PyTorch reference."""

__version__ = "0.1.0"
