"""One training step: loss scaling, gradient reduction, overflow skip, clipping, optimizer, EMA.

MindSpore's stock ``TrainOneStepWithLossScaleCell`` detects overflow with Ascend/GPU-only status
kernels and fails on the CPU; here overflow is ``not all_finite(grads)``, which works everywhere.
Order of a step: copy of the BatchNorm running statistics -> scaled loss (the forward pass updates
the statistics) -> gradients -> unscale -> all-reduce (data parallel) -> overflow flag: non-finite
gradients, loss or statistics (all-reduced so every rank agrees) -> loss-scale update -> if finite:
clip to the global norm, optimizer step, EMA update; on overflow: the statistics are put back. So a
skipped step leaves weights, statistics, optimizer state and EMA as they were, and non-finite values
never reach a checkpoint. The copy costs one small vector per BatchNorm statistic per step.
"""
from typing import Optional, Sequence

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

AMP_LEVELS = ("O0", "O2", "O3")
_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_grad(inv_scale, grad):
    return grad * inv_scale.astype(grad.dtype)


_snapshot = ops.MultitypeFuncGraph("snapshot")


@_snapshot.register("Tensor")
def _snapshot_value(param):
    return param * 1  # a value, not a reference to the parameter the forward pass updates


_keep_on_overflow = ops.MultitypeFuncGraph("keep_on_overflow")


@_keep_on_overflow.register("Tensor", "Tensor", "Tensor")
def _keep_value(overflow, param, before):
    return ops.assign(param, ops.select(overflow, before, param))


_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_step(decay, ema, param):
    return ops.assign(ema, ema * decay + param.astype(ema.dtype) * (1 - decay))


BN_STATISTICS = ("moving_mean", "moving_variance")


def ema_source_params(net: nn.Cell) -> list:
    """What the EMA tracks: every parameter that training changes (weights and BN statistics),
    as timm's ModelEma averages the whole state dict; frozen tables never change and are skipped."""
    return [p for p in net.get_parameters() if p.requires_grad or p.name.endswith(BN_STATISTICS)]


def create_loss_scale(dynamic: bool, scale: float, window: int):
    """A ``DynamicLossScaleUpdateCell`` (halves on overflow, doubles after ``window`` clean steps) or a
    fixed scale."""
    if dynamic:
        return nn.DynamicLossScaleUpdateCell(loss_scale_value=scale, scale_factor=2, scale_window=window)
    return Tensor(scale, ms.float32)


class TrainOneStep(nn.TrainOneStepWithLossScaleCell):
    """Returns (loss, overflow, loss scale). ``network`` maps the inputs to the (unscaled) loss."""

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, scale_sense, clip_norm: float = 0.0,
                 ema_decay: float = 0.0, ema_params: Optional[Sequence[Parameter]] = None):
        super().__init__(network, optimizer, scale_sense)
        self.clip = clip_norm > 0
        self.clip_norm = float(clip_norm)
        self.use_ema = ema_decay > 0
        self.ema_decay = Tensor(ema_decay, ms.float32)
        sources = list(ema_params or []) if self.use_ema else []
        self.ema_sources = ParameterTuple(sources)
        self.ema = ParameterTuple([Parameter(p.data.copy(), name=f"ema.{p.name}", requires_grad=False)
                                   for p in sources])
        self.statistics = ParameterTuple([p for p in network.get_parameters() if p.name.endswith(BN_STATISTICS)])

    def construct(self, *inputs):
        before = self.hyper_map(_snapshot, self.statistics)
        loss = self.network(*inputs)
        scale = self.scale_sense
        sens = ops.ones_like(loss) * scale.astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.hyper_map(ops.partial(_unscale, ops.reciprocal(scale)), grads)
        grads = self.grad_reducer(grads)
        finite = ops.logical_and(ms.amp.all_finite(grads), ops.isfinite(loss).all())
        if self.statistics:
            finite = ops.logical_and(finite, ms.amp.all_finite(self.statistics))
        overflow = ops.logical_not(finite)
        if self.is_distributed:
            overflow = self.allreduce(overflow.astype(ms.float32)) > 0
        overflow = self.process_loss_scale(overflow)
        if not overflow:
            if self.clip:
                grads = ops.clip_by_global_norm(grads, self.clip_norm)
            loss = ops.depend(loss, self.optimizer(grads))
            if self.use_ema:
                loss = ops.depend(loss, self.hyper_map(ops.partial(_ema_update, self.ema_decay),
                                                       self.ema, self.ema_sources))
        if self.statistics:
            loss = ops.depend(loss, self.hyper_map(ops.partial(_keep_on_overflow, overflow), self.statistics, before))
        return loss, overflow, scale


def build_train_step(model: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0", loss_fn: nn.Cell = None,
                     scale_sense=None, clip_norm: float = 0.0, ema_decay: float = 0.0) -> TrainOneStep:
    """model -> mixed precision (O2/O3 keep BatchNorm in float32) -> loss -> ``TrainOneStep``, in training mode."""
    net = model if amp_level == "O0" else ms.amp.auto_mixed_precision(model, amp_level)
    loss_net = nn.WithLossCell(net, loss_fn if loss_fn is not None else nn.CrossEntropyLoss())
    step = TrainOneStep(loss_net, optimizer, scale_sense if scale_sense is not None else Tensor(1.0, ms.float32),
                        clip_norm=clip_norm, ema_decay=ema_decay, ema_params=ema_source_params(model))
    step.set_train(True)
    return step
