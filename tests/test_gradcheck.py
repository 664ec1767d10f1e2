"""Tests of the gradient checker itself: it passes correct ops and catches wrong backwards."""
import numpy as np
import pytest

from tinygrad_gpt import Tensor, functional as F
from tinygrad_gpt.backend import get_array_module
from tinygrad_gpt.function import Function
from tinygrad_gpt.gradcheck import (GradcheckError, check_grads, numerical_jacobian,
                                    analytic_jacobian)

TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)


def t64(xp, *shape, seed=0, requires_grad=True, low=-1.0, high=1.0):
    a = np.random.default_rng(seed).uniform(low, high, size=shape)
    return Tensor(xp.asarray(a), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- small Functions

class Square(Function):
    """A correct x^2."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, g):
        return 2 * self.saved[0] * g


class BadSquare(Square):
    """x^2 with the factor 2 forgotten in backward."""

    def backward(self, g):
        return self.saved[0] * g


class OneWrongEntry(Square):
    """x^2 whose backward is wrong only for the element at flat index 1."""

    def backward(self, g):
        gx = 2 * self.saved[0] * g
        gx.flat[1] *= 3
        return gx


class SlightlyOff(Square):
    """x^2 whose backward is off by a relative 1e-3."""

    def backward(self, g):
        return 2 * self.saved[0] * g * (1 + 1e-3)


class MulForgetsY(Function):
    """x * y whose backward gives no gradient to y."""

    def forward(self, x, y):
        self.save_for_backward(x, y)
        return x * y

    def backward(self, g):
        x, y = self.saved
        return g * y, None


class TransposedGrad(Function):
    """x @ W for a fixed random W, with backward using W instead of W^T: right shapes for
    a square W, wrong values."""

    def forward(self, x):
        xp = get_array_module(x)
        self.w = xp.asarray(np.random.default_rng(1).standard_normal((x.shape[-1], x.shape[-1])))
        return x @ self.w

    def backward(self, g):
        return g @ self.w


def apply(fn_cls):
    return lambda *ts: Tensor._apply(fn_cls, *ts)


# ----------------------------------------------------------------------------- passes on correct ops

CORRECT = {
    "square_function": (apply(Square), [(3, 4)]),
    "tanh_of_product": (lambda x, y: (x * y).tanh(), [(3, 4), (4,)]),
    "matmul": (lambda x, y: x @ y, [(2, 3), (3, 2)]),
    "softmax": (lambda x: F.softmax(x), [(2, 5)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [(2, 5), (5,), (5,)]),
    "scalar_output": (lambda x: (x.exp() * x).sum(), [(4,)]),
}


@pytest.mark.parametrize("mode", ["directional", "full"])
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_passes_on_correct_ops(xp, name, mode):
    fn, shapes = CORRECT[name]
    inputs = [t64(xp, *s, seed=i) for i, s in enumerate(shapes)]
    assert check_grads(fn, inputs, mode=mode, **TOL) is True


def test_only_inputs_that_require_grad_are_checked(xp):
    x = t64(xp, 3)
    y = t64(xp, 3, seed=1, requires_grad=False)
    # MulForgetsY gives y no gradient; that is fine while y does not require one
    assert check_grads(apply(MulForgetsY), [x, y], **TOL)
    y.requires_grad_()
    with pytest.raises(GradcheckError):
        check_grads(apply(MulForgetsY), [x, y], **TOL)


def test_inputs_are_left_untouched(xp):
    x = t64(xp, 3, 2)
    before = x.numpy().copy()
    check_grads(lambda x: x.sigmoid(), [x], **TOL)
    check_grads(lambda x: x.sigmoid(), [x], mode="full", **TOL)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


# ----------------------------------------------------------------------------- fails on wrong backwards

@pytest.mark.parametrize("mode", ["directional", "full"])
@pytest.mark.parametrize("bad", [BadSquare, OneWrongEntry, TransposedGrad])
def test_fails_on_a_wrong_backward(xp, bad, mode):
    x = t64(xp, 3, 3)
    with pytest.raises(GradcheckError):
        check_grads(apply(bad), [x], mode=mode, **TOL)
    assert check_grads(apply(bad), [x], mode=mode, raise_on_failure=False, **TOL) is False


def test_directional_failure_message_gives_both_numbers(xp):
    with pytest.raises(GradcheckError, match="backward gives .* central differences give"):
        check_grads(apply(BadSquare), [t64(xp, 4)], **TOL)


def test_full_mode_reports_the_wrong_entry(xp):
    x = t64(xp, 2, 2)
    with pytest.raises(GradcheckError) as e:
        check_grads(apply(OneWrongEntry), [x], mode="full", **TOL)
    msg = str(e.value)
    # only the diagonal entry for element 1 is wrong: d out[1] / d x[1]
    assert "1 Jacobian entries disagree" in msg
    assert "input 0, d out[1] / d x[1]" in msg
    assert "d out[0] / d x[0]" not in msg and "d out[2] / d x[2]" not in msg
    xv = x.numpy().ravel()
    assert f"backward {6 * xv[1]:.10g}, numerical" in msg


def test_full_mode_without_raising_prints_the_report(xp, capsys):
    assert check_grads(apply(BadSquare), [t64(xp, 3)], mode="full", raise_on_failure=False, **TOL) is False
    out = capsys.readouterr().out
    assert "3 Jacobian entries disagree" in out and "d out[2] / d x[2]" in out


def test_tolerances_are_applied(xp):
    x = t64(xp, 5)
    with pytest.raises(GradcheckError):
        check_grads(apply(SlightlyOff), [x], eps=1e-6, atol=1e-7, rtol=1e-5)
    assert check_grads(apply(SlightlyOff), [x], eps=1e-6, atol=1e-7, rtol=1e-2)


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)


# ----------------------------------------------------------------------------- refusals

def test_float32_input_is_refused(xp):
    x = Tensor(xp.asarray(np.ones(3, dtype=np.float32)), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        check_grads(lambda x: x * x, [x])


def test_no_input_requiring_grad_is_refused(xp):
    with pytest.raises(ValueError, match="requires_grad"):
        check_grads(lambda x: x * x, [t64(xp, 3, requires_grad=False)])


def test_unknown_mode_is_refused(xp):
    with pytest.raises(ValueError, match="mode"):
        check_grads(lambda x: x * x, [t64(xp, 3)], mode="forward")


# ----------------------------------------------------------------------------- the Jacobians

def test_jacobians_of_a_linear_map(xp):
    A = np.random.default_rng(2).standard_normal((4, 3))
    x = np.random.default_rng(3).standard_normal(3)
    fn = lambda x: xp.asarray(A) @ x  # noqa: E731 (d (A x) / dx = A)
    num = numerical_jacobian(fn, [xp.asarray(x)], 0)
    ana = analytic_jacobian(fn, [xp.asarray(x)], [True], 0)
    assert num.shape == ana.shape == (4, 3)
    np.testing.assert_allclose(num, A, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ana, A, rtol=1e-14)
