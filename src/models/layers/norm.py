"""BatchNorm with a compiled CPU kernel for inference."""
import mindspore as ms
from mindspore import Tensor, nn

from .form import NATIVE, Formulation


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (eps 1e-5, PyTorch's momentum 0.1 as MindSpore's 0.9) whose inference, in the CPU
    formulation, runs the compiled kernel (``form.batch_norm``): x * a + b per channel, one pass, where
    MindSpore's CPU BatchNorm takes several times PyTorch's. Training, batch statistics and other dtypes keep
    MindSpore's kernel. Parameters and their names are ``nn.BatchNorm2d``'s, so checkpoints and the
    ``isinstance`` checks (calibration, frozen stages, mixed precision) are unchanged.

    Args:
        num_features: channels.
        form: the layers' formulation; its ``batch_norm`` kernel serves inference.
    """

    def __init__(self, num_features: int, form: Formulation = NATIVE):
        super().__init__(num_features, eps=1e-5, momentum=0.9)
        self.fast_inference = form.batch_norm
        self.eps_tensor = Tensor([self.eps], ms.float32)  # the kernel reads eps as an input

    def construct(self, x):
        if self.fast_inference is not None and not self.training and self.use_batch_statistics is not True \
                and x.dtype == ms.float32:
            return self.fast_inference(x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                                       self.eps_tensor)
        return super().construct(x)
