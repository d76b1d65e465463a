"""Optimisers configured as the Keras lesson's, including where PyTorch's differ in formula."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

OPTIMIZERS = ("rmsprop", "adam")
DEFAULT_LR = {"rmsprop": 1e-4, "adam": 1e-3}
# Attribute a model may set on a parameter: per-row sums of squared per-occurrence gradients,
# used by KerasRMSprop in place of grad² (see SentimentRNN's sparse_embedding_updates).
ROW_SQUARES = "keras_row_squares"


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop exactly as Keras computes it (no momentum, not centred).

    ``v ← ρ·v + (1 − ρ)·g²`` and ``θ ← θ − lr·g / √(v + ε)``, with Keras's defaults ρ = 0.9 and
    ε = 1e-7. A parameter carrying ``ROW_SQUARES`` (an embedding whose gradient Keras sees as
    one slice per word occurrence) adds those per-row sums of squares to ``v`` instead of g².
    ``torch.optim.RMSprop`` divides by ``√v + ε`` instead, which takes steps up to
    √(1/ρ̄)-fold larger on the small gradients of an 8-unit RNN's first updates; no setting
    of it reproduces Keras's step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-4,
        rho: float = 0.9,
        eps: float = 1e-7,
    ):
        if lr <= 0 or not 0 <= rho < 1 or eps < 0:
            raise ValueError(f"invalid RMSprop settings: lr={lr}, rho={rho}, eps={eps}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            square_avgs, squares = [], []
            for p, grad in zip(params, grads, strict=True):
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                square_avgs.append(state["square_avg"])
                row_squares = p.__dict__.pop(ROW_SQUARES, None)
                squares.append(grad * grad if row_squares is None else row_squares)
            torch._foreach_mul_(square_avgs, group["rho"])
            torch._foreach_add_(square_avgs, squares, alpha=1 - group["rho"])
            denominators = torch._foreach_sqrt(torch._foreach_add(square_avgs, group["eps"]))
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return KerasRMSprop(params, lr=lr)
    if name == "adam":
        # Keras's Adam epsilon, so switching frameworks changes nothing but the framework.
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
