"""Draft heads: Arctic's MLP and LSTM speculators, served behind ``speculative_config.method``
``"arctic"`` / ``"mlp_speculator"``, alone or combined with suffix decoding (``hybrid``)."""
