"""References for the task-loss weighting layers.

Semantics: Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics" (CVPR 2018), Eq. 7 in the
form `sum_i exp(-s_i) * L_i + s_i` with `s_i = log(sigma_i^2)` (twice the
paper's regression objective, the same minimiser), applied element-wise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Result = dict[str, Any]


def uncertainty_weighting(inputs, weights, config, training, **_) -> Result:
    s = np.asarray(weights["log_variances"], dtype=np.float64)
    if len(inputs) != s.shape[0]:
        raise ValueError(f"expected {s.shape[0]} losses, got {len(inputs)}")
    total = sum(
        np.exp(-s[i]) * np.asarray(x, np.float64) + s[i] for i, x in enumerate(inputs)
    )
    return {"outputs": [np.asarray(total, np.float64)]}
