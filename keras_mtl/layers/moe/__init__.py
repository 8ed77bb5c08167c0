"""Token-routed sparse mixtures of experts."""
