"""Offline training recipes for SmolLM2-135M (SwiftKV distillation; shared data generation).

Everything here runs on plain PyTorch (no vLLM, no transformers at run time), so the same code runs
on this CPU machine (dry runs, evaluation) and on the GPU host (which has torch but no package index).
"""
