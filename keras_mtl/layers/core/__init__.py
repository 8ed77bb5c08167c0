"""Core layers: dense and MLP blocks, activations, normalization, pooling,
merging."""
