"""Second derivatives: Newton's method against gradient descent, on Rosenbrock's valley.

f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 has its minimum 0 at (1, 1), at the end of a long,
curved, narrow valley. Gradient descent must take small steps (the valley's walls are steep:
the Hessian's largest eigenvalue is about 1000 near the minimum) and then crawls along the floor.
Newton's method divides the gradient by the curvature, x <- x - H^-1 grad f, with the Hessian
from ``tinygrad_gpt.autograd.hessian``: a backward through a recorded backward.

It starts with the worked number of docs/11a-higher-order.md: the second derivative of tanh at
0.5, from the engine and from the formula -2 tanh(x) (1 - tanh(x)^2).

    python examples/17_newton.py --steps=8 --lr=0.001 --gd_steps=5000
"""
import argparse
import math

import numpy as np

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def worked_number():
    x = Tensor(np.array([0.5]), requires_grad=True)
    (g,) = tg.grad(x.tanh().sum(), x, create_graph=True)   # 1 - tanh(x)^2, itself a graph
    (gg,) = tg.grad(g.sum(), x)
    t = math.tanh(0.5)
    print(f"tanh(0.5) = {t:.6f}; first derivative 1 - t^2 = {g.item():.6f} (formula {1 - t * t:.6f})")
    print(f"second derivative: backward of backward {gg.item():.6f}, formula -2 t (1 - t^2) = "
          f"{-2 * t * (1 - t * t):.6f}")


def newton(start, steps):
    p = np.array(start)
    print(f"Newton: step 0: f = {rosenbrock(Tensor(p)).item():.3e} at ({p[0]:.6f}, {p[1]:.6f})")
    for step in range(1, steps + 1):
        H = tg.autograd.hessian(rosenbrock, Tensor(p)).numpy()            # (2, 2)
        g = tg.autograd.vjp(rosenbrock, Tensor(p), Tensor(np.array(1.0)))[1].numpy()
        p = p - np.linalg.solve(H, g)
        print(f"Newton: step {step}: f = {rosenbrock(Tensor(p)).item():.3e} at ({p[0]:.6f}, {p[1]:.6f})")
    return p


def gradient_descent(start, lr, steps, report):
    p = np.array(start)
    for step in range(1, steps + 1):
        g = tg.autograd.vjp(rosenbrock, Tensor(p), Tensor(np.array(1.0)))[1].numpy()
        p = p - lr * g
        if step in report:
            print(f"gradient descent (lr={lr:g}): step {step}: f = {rosenbrock(Tensor(p)).item():.3e} "
                  f"at ({p[0]:.6f}, {p[1]:.6f})")
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="Newton steps")
    parser.add_argument("--lr", type=float, default=0.001, help="gradient descent's step size")
    parser.add_argument("--gd_steps", type=int, default=5000, help="gradient descent steps")
    args = parser.parse_args(argv)
    worked_number()
    start = (-1.2, 1.0)
    newton(start, args.steps)
    report = sorted({args.steps, min(100, args.gd_steps), min(1000, args.gd_steps), args.gd_steps})
    gradient_descent(start, args.lr, args.gd_steps, report)
    H = tg.autograd.hessian(rosenbrock, Tensor(np.array([1.0, 1.0]))).numpy()
    print(f"Hessian at the minimum: {H.tolist()}; eigenvalues {np.round(np.linalg.eigvalsh(H), 3).tolist()}"
          f" (gradient descent is stable for lr < 2 / {np.linalg.eigvalsh(H).max():.3f})")


if __name__ == "__main__":
    main()
