"""One training step: loss scaling, gradient reduction, overflow skip, clipping, optimizer, EMA.

MindSpore's stock ``TrainOneStepWithLossScaleCell`` detects overflow with Ascend/GPU-only status
kernels and fails on the CPU; here overflow is ``not all_finite(gradients, loss, statistics)``, one call per step,
which works everywhere.
Order of a step: copy of the BatchNorm running statistics -> scaled loss (the forward pass updates
the statistics) -> gradients -> unscale -> all-reduce (data parallel) -> overflow flag: non-finite
gradients, loss or statistics (all-reduced so every rank agrees) -> loss-scale update -> if finite:
clip to the global norm, optimizer step, EMA update; on overflow: the statistics are put back. So a
skipped step leaves weights, statistics, optimizer state and EMA as they were, and non-finite values
never reach a checkpoint. The copy costs one small vector per BatchNorm statistic per step.

Gradient accumulation (``accumulation`` N > 1): the first N - 1 micro-batches of an update only add their
unscaled gradients to ``accumulated.*`` sums; the N-th runs the step above on the mean of the N gradients
(the gradient of one batch N times as large), so loss scaling, overflow skip, clipping, the optimizer's
global step and the EMA act once per update. The sums are zero between updates and are not checkpointed.
"""
from typing import Optional, Sequence

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ..models.layers import graphs_in_float32

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
    return ops.assign(param, ops.where(overflow, before, param))


_accumulate = ops.MultitypeFuncGraph("accumulate")


@_accumulate.register("Tensor", "Tensor")
def _accumulate_grad(total, grad):
    return ops.assign_add(total, grad.astype(total.dtype))


_mean_and_reset = ops.MultitypeFuncGraph("mean_and_reset")


@_mean_and_reset.register("Tensor", "Tensor", "Tensor")
def _mean_grad(inv_count, total, grad):
    mean = (total + grad.astype(total.dtype)) * inv_count
    return ops.depend(mean, ops.assign(total, ops.zeros_like(total)))


_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_step(decay, ema, param):
    return ops.assign(ema, ema * decay + param.astype(ema.dtype) * (1 - decay))


BN_STATISTICS = ("moving_mean", "moving_variance")


def ema_source_params(net: nn.Cell) -> list:
    """What the EMA tracks: every parameter that training changes (weights and BN statistics),
    as timm's ModelEma averages the whole state dict; frozen tables never change and are skipped."""
    return [p for p in net.get_parameters() if p.requires_grad or p.name.endswith(BN_STATISTICS)]


DEFAULT_DYNAMIC_SCALE, DEFAULT_FIXED_SCALE = 2.0 ** 24, 1024.0  # the ModelZoo's


def create_loss_scale(dynamic: bool, scale: Optional[float], window: int):
    """A ``DynamicLossScaleUpdateCell`` (halves on overflow, doubles after ``window`` clean steps) or a
    fixed scale; ``scale`` None takes the ModelZoo's (2^24 dynamic, 1024 fixed)."""
    if scale is None:
        scale = DEFAULT_DYNAMIC_SCALE if dynamic else DEFAULT_FIXED_SCALE
    if dynamic:
        return nn.DynamicLossScaleUpdateCell(loss_scale_value=scale, scale_factor=2, scale_window=window)
    return Tensor(scale, ms.float32)


class TrainOneStep(nn.TrainOneStepWithLossScaleCell):
    """Returns (loss, overflow, loss scale). ``network`` maps the inputs to the (unscaled) loss."""

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, scale_sense, clip_norm: float = 0.0,
                 ema_decay: float = 0.0, ema_params: Optional[Sequence[Parameter]] = None, accumulation: int = 1):
        super().__init__(network, optimizer, scale_sense)
        self.accumulation = int(accumulation)
        self.micro_batch = 0  # micro-batches of the current update seen so far (Python side)
        if self.accumulation > 1:
            self.accumulated = self.weights.clone(prefix="accumulated", init="zeros")
            self.inv_count = Tensor(1.0 / self.accumulation, ms.float32)
            self.add_micro_batch = _AccumulateGrads(self)
            self.no_overflow = Tensor(False)
        self.clip = clip_norm > 0
        self.clip_norm = float(clip_norm)
        self.use_ema = ema_decay > 0
        self.ema_decay = Tensor(ema_decay, ms.float32)
        sources = list(ema_params or []) if self.use_ema else []
        self.ema_sources = ParameterTuple(sources)
        self.ema = ParameterTuple([Parameter(p.data.copy(), name=f"ema.{p.name}", requires_grad=False)
                                   for p in sources])
        self.statistics = ParameterTuple([p for p in network.get_parameters() if p.name.endswith(BN_STATISTICS)])
        if self.accumulation > 1:  # the statistics before an update's first micro-batch, put back if it overflows
            self.statistics_at_start = ParameterTuple([Parameter(p.data.copy(), name=f"accumulated.{p.name}",
                                                                 requires_grad=False) for p in self.statistics])
            self.save_statistics = _CopyParameters(self.statistics_at_start, self.statistics)

    def construct(self, *inputs):
        if self.accumulation > 1:
            before = self.hyper_map(_snapshot, self.statistics_at_start)
        else:
            before = self.hyper_map(_snapshot, self.statistics)
        loss = self.network(*inputs)
        scale = self.scale_sense
        sens = ops.ones_like(loss) * scale.astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.hyper_map(ops.partial(_unscale, ops.reciprocal(scale)), grads)
        if self.accumulation > 1:
            grads = self.hyper_map(ops.partial(_mean_and_reset, self.inv_count), self.accumulated, grads)
        grads = self.grad_reducer(grads)
        # One check per step: on Ascend 910A (and 910B in saturation mode) all_finite reads and clears the NPU
        # float-status register whatever its inputs (mindspore/amp.py _all_finite), so a second call checks nothing.
        overflow = ops.logical_not(ms.amp.all_finite(grads + (loss,) + self.statistics))
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

    def __call__(self, *inputs):
        """A micro-batch that does not complete an update only accumulates: (loss, no overflow, scale)."""
        if self.accumulation > 1:
            if self.micro_batch == 0 and self.statistics:
                self.save_statistics()
            self.micro_batch = (self.micro_batch + 1) % self.accumulation
            if self.micro_batch:
                return self.add_micro_batch(*inputs), self.no_overflow, self.scale_sense.value()
        return super().__call__(*inputs)

    @property
    def update_done(self) -> bool:
        """Whether the last call completed an optimizer update (always, without accumulation): where a
        run may stop, and what counts as a step of the overflow window."""
        return self.micro_batch == 0


class _CopyParameters(nn.Cell):
    """targets <- sources (values), as one graph."""

    def __init__(self, targets: ParameterTuple, sources: ParameterTuple):
        super().__init__(auto_prefix=False)
        self.targets, self.sources = targets, sources
        self.hyper_map = ops.HyperMap()

    def construct(self):
        return self.hyper_map(ops.assign, self.targets, self.sources)


class _AccumulateGrads(nn.Cell):
    """One micro-batch of an accumulated update: its unscaled gradients added to the step's sums."""

    def __init__(self, step: TrainOneStep):
        super().__init__(auto_prefix=False)
        self.network, self.weights, self.grad = step.network, step.weights, step.grad
        self.scale_sense, self.accumulated, self.hyper_map = step.scale_sense, step.accumulated, step.hyper_map

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.scale_sense
        grads = self.grad(self.network, self.weights)(*inputs, ops.ones_like(loss) * scale.astype(loss.dtype))
        grads = self.hyper_map(ops.partial(_unscale, ops.reciprocal(scale)), grads)
        return ops.depend(loss, self.hyper_map(_accumulate, self.accumulated, grads))


def mixed_precision(net: nn.Cell, amp_level: str, keep_bn_fp32: bool = True) -> nn.Cell:
    """``net`` at ``amp_level``: O0 float32; O2 float16 with BatchNorm in float32 (always); O3 float16
    throughout, BatchNorm back in float32 when ``keep_bn_fp32``. At O2 and O3 the graphs (kNN distances and
    top-k, relative-position term, SViG similarity) are built in float32 (``graphs_in_float32``)."""
    if amp_level == "O0":
        return net
    if amp_level == "O2" and not keep_bn_fp32:
        raise ValueError("amp_level O2 always computes BatchNorm in float32: set keep_bn_fp32 true, or use amp_level "
                         "O3 for float16 BatchNorm")
    net = ms.amp.auto_mixed_precision(net, amp_level)
    if amp_level == "O3" and keep_bn_fp32:
        for _, cell in net.cells_and_names():
            if isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)):
                cell.to_float(ms.float32)
    return graphs_in_float32(net)


def build_train_step(model: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0", loss_fn: nn.Cell = None,
                     scale_sense=None, clip_norm: float = 0.0, ema_decay: float = 0.0, keep_bn_fp32: bool = True,
                     accumulation: int = 1) -> TrainOneStep:
    """model -> mixed precision -> loss -> ``TrainOneStep`` (updating every ``accumulation`` micro-batches),
    in training mode."""
    net = mixed_precision(model, amp_level, keep_bn_fp32)
    loss_net = nn.WithLossCell(net, loss_fn if loss_fn is not None else nn.CrossEntropyLoss())
    step = TrainOneStep(loss_net, optimizer, scale_sense if scale_sense is not None else Tensor(1.0, ms.float32),
                        clip_norm=clip_norm, ema_decay=ema_decay, ema_params=ema_source_params(model),
                        accumulation=accumulation)
    step.set_train(True)
    return step
