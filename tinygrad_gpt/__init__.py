"""tinygrad_gpt: a GPT on a small reverse-mode autodiff engine (NumPy on the CPU, CuPy on CUDA)."""
from .backend import DeviceError, default_device, device, manual_seed
from .tensor import Tensor, no_grad, is_grad_enabled
from . import functional
from .engine import autograd
from .engine.higher import grad

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "functional", "autograd", "grad", "device",
           "default_device", "manual_seed", "DeviceError"]
__version__ = "0.1.0"
