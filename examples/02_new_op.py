"""A new op with its backward, gradient-checked: softplus(x) = log(1 + e^x).

An op is a Function: ``forward`` on raw arrays (NumPy or CuPy, whichever ``xp``
the input belongs to), saving what ``backward`` needs, and ``backward(g)``
returning the gradient of the loss with respect to the input, given ``g``,
the gradient with respect to the output. ``Softplus.apply(x)`` runs it on a Tensor and links
it into the graph, as ``torch.autograd.Function.apply`` does; an error raised in your forward or
backward reaches you as it was raised.

    d/dx log(1 + e^x) = e^x / (1 + e^x) = sigmoid(x)

``check_grads`` then compares backward with central differences in float64;
a backward with a slip in it fails the same check.

    python examples/02_new_op.py --n=5
"""
import argparse

import numpy as np

from tinygrad_gpt import Tensor
from tinygrad_gpt.backend import get_array_module
from tinygrad_gpt.function import Function
from tinygrad_gpt.gradcheck import GradcheckError, check_grads


class Softplus(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).logaddexp(0, x)  # log(e^0 + e^x), without overflow for big x

    def backward(self, g):
        (x,) = self.saved
        xp = get_array_module(x)
        # d/dx log(1 + e^x) = sigmoid(x) = (1 + tanh(x / 2)) / 2
        return g * (0.5 * (1 + xp.tanh(0.5 * x)))


class SoftplusWithASlip(Softplus):
    def backward(self, g):
        (x,) = self.saved
        # wrong: the derivative of log(u) is 1/u, but the chain rule's du/dx = e^x is missing
        return g / (1 + get_array_module(x).exp(x))


def softplus(x):
    return Softplus.apply(x)


def softplus_composed(x):
    """The same function from primitives: the engine derives its backward by the chain rule."""
    return (x.exp() + 1).log()


def main(argv=None):
    p = argparse.ArgumentParser(description="Write softplus as a new op and gradient-check it.")
    p.add_argument("--n", type=int, default=5, help="number of input values")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    x_np = np.random.default_rng(a.seed).uniform(-3, 3, size=a.n)

    x = Tensor(x_np, requires_grad=True)  # float64: gradient checks need the precision
    softplus(x).sum().backward()
    x2 = Tensor(x_np, requires_grad=True)
    softplus_composed(x2).sum().backward()
    print("x            ", np.round(x_np, 4))
    print("softplus(x)  ", np.round(softplus(x).numpy(), 4))
    print("our backward ", np.round(x.grad, 4))
    print("composed     ", np.round(x2.grad, 4), f"(max difference {np.abs(x.grad - x2.grad).max():.1e})")

    ok = check_grads(softplus, [Tensor(x_np, requires_grad=True)])
    print(f"\ncheck_grads(softplus): {'PASS' if ok else 'FAIL'}")
    try:
        check_grads(SoftplusWithASlip.apply, [Tensor(x_np, requires_grad=True)])
        print("check_grads(softplus with a slip): PASS (it should not!)")
        return 1
    except GradcheckError as e:
        print(f"check_grads(softplus with a slip): FAIL, as it should\n  {e}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
