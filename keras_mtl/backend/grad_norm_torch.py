"""PyTorch adapter: `torch.autograd.grad` with a retained graph.

Under `torch.no_grad()` (Keras' `test_step`) the shared tensors are detached
and re-marked as requiring grad, so the norms are still computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def task_losses_and_grad_norms(
    loss_fn: Callable[[list[Any]], list[Any]], shared: list[Any]
) -> tuple[list[Any], Any]:
    with torch.enable_grad():
        shared = [
            s if s.requires_grad else s.detach().requires_grad_(True) for s in shared
        ]
        losses = list(loss_fn(shared))
        norms = []
        for loss in losses:
            if not loss.requires_grad:
                norms.append(torch.zeros((), device=loss.device))
                continue
            grads = torch.autograd.grad(
                loss, shared, retain_graph=True, allow_unused=True
            )
            squares = [
                torch.sum(torch.square(g.float())) for g in grads if g is not None
            ]
            norms.append(
                torch.sqrt(sum(squares))
                if squares
                else torch.zeros((), device=loss.device)
            )
    return losses, torch.stack(norms).detach()
