"""arctic-serve's vLLM runtime plugin.

Importing this package never imports vLLM or torch: the plugin's entry point (``plugin.register``)
is called by vLLM itself, and only an enabled plugin touches vLLM (see ``patches``).
"""

__version__ = "0.1.0"
