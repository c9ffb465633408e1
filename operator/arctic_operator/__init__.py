"""arctic-serve's Kubernetes operator (ArcticInferenceService). Needs neither torch nor vLLM."""

__version__ = "0.1.0"
