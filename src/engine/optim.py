"""Optimizers: AdamW with PyTorch semantics (the official recipe) and SGD with momentum.

MindSpore's ``nn.AdamWeightDecay`` omits Adam's bias correction, which makes its first steps
about 1 / sqrt(1 - beta2) times larger than PyTorch's AdamW; ``AdamW`` below corrects both
moments and decays weights decoupled from the gradient, as ``torch.optim.AdamW`` does.
"""
from typing import List, Sequence

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..choices import OPTIMIZERS


def no_weight_decay(param: Parameter) -> bool:
    """Biases, norm parameters (all 1-D) and position tables are not decayed."""
    return len(param.shape) <= 1 or param.name.endswith(("bias", "pos_embed", "relative_pos"))


def param_groups(params: Sequence[Parameter], weight_decay: float) -> List[dict]:
    decay = [p for p in params if not no_weight_decay(p)]
    no_decay = [p for p in params if no_weight_decay(p)]
    groups = [{"params": group, "weight_decay": wd} for group, wd in ((decay, weight_decay), (no_decay, 0.0)) if group]
    return groups + [{"order_params": list(params)}]


_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Number", "Tensor", "Tensor",
                        "Tensor", "Tensor")
def _adamw_step(fused, beta1, beta2, eps, lr, scale, weight_decay, param, exp_avg, exp_avg_sq, grad):
    return fused(param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay / scale, grad.astype(param.dtype))


class AdamW(nn.Optimizer):
    """torch.optim.AdamW: p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps), with bias-corrected
    moments m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t). State: ``exp_avg.*``, ``exp_avg_sq.*``.

    Computed by MindSpore's fused AdamWeightDecay kernel, which has no bias correction, fed with
    lr' = lr s, eps' = eps sqrt(1 - beta2^t) and decay' = wd / s where s = sqrt(1 - beta2^t) / (1 - beta1^t):
    algebraically the same update, in one kernel per parameter instead of a dozen element-wise ops.
    """

    def __init__(self, params, learning_rate, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1 = Tensor(beta1, ms.float32)
        self.beta2 = Tensor(beta2, ms.float32)
        self.eps = Tensor(eps, ms.float32)
        self.exp_avg = self._parameters.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self._parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.decays = tuple(float(wd) for wd in self._per_param_weight_decay())
        self.fused = ops.AdamWeightDecay()

    def _per_param_weight_decay(self):
        if self.is_group:
            return [float(np.asarray(wd)) for wd in self.weight_decay]
        return [float(np.asarray(self.weight_decay))] * len(self._parameters)

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        step = self.global_step.astype(ms.float32).reshape(())
        bias1 = 1 - ops.pow(self.beta1, step)
        root_bias2 = ops.sqrt(1 - ops.pow(self.beta2, step))
        scale = root_bias2 / bias1
        return self.hyper_map(ops.partial(_adamw_update, self.fused, self.beta1, self.beta2, self.eps * root_bias2,
                                          lr * scale, scale),
                              self.decays, self._parameters, self.exp_avg, self.exp_avg_sq, gradients)


def create_optimizer(params: Sequence[Parameter], name: str, learning_rate: np.ndarray, weight_decay: float,
                     beta=(0.9, 0.999), eps: float = 1e-8, momentum: float = 0.9) -> nn.Optimizer:
    """Optimizer over ``params`` with a per-step learning-rate array; no decay on 1-D/position params."""
    lr = Tensor(np.asarray(learning_rate, np.float32))
    groups = param_groups(params, weight_decay)
    if name == "adamw":
        return AdamW(groups, lr, beta1=beta[0], beta2=beta[1], eps=eps, weight_decay=weight_decay)
    if name in ("sgd", "momentum"):
        return nn.Momentum(groups, lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
