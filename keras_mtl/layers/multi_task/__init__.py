"""Multi-task layers: MMoE, CGC, PLE, SNR, and the loss weighting of GradNorm
and UncertaintyWeighting."""
