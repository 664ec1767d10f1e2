"""Gradients of gradients: grad and backward(create_graph=True), second derivatives of every op in
every mode against central differences, Hessian-vector products and third derivatives against
PyTorch, and the tinygrad_gpt.autograd helpers against torch.func."""
import zlib

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, functional as F, rules
from tinygrad_gpt.commands.cli import main
from tinygrad_gpt.commands.gradcheck import CASES
from tinygrad_gpt.errors import DoubleBackwardError, GradcheckError
from tinygrad_gpt.function import Function
from tinygrad_gpt.gradcheck import gradgradcheck

torch = pytest.importorskip("torch")
MODES = ("composed", "rules", "fast")


def t64(a, requires_grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- the API

def test_grad_returns_a_tuple_and_leaves_dot_grad_alone():
    x = t64([1.0, 2.0])
    y = (x * x * x).sum()
    (gx,) = tg.grad(y, [x], create_graph=True)
    assert isinstance(gx, Tensor) and gx.requires_grad and x.grad is None
    np.testing.assert_allclose(gx.numpy(), 3 * np.array([1.0, 4.0]))
    (ggx,) = tg.grad(gx.sum(), x)
    np.testing.assert_allclose(ggx.numpy(), [6.0, 12.0])
    assert not ggx.requires_grad and x.grad is None


@pytest.mark.host_only("compares .grad with host NumPy arrays")
def test_backward_create_graph_leaves_differentiable_gradients_with_first_order_values():
    x0 = np.random.default_rng(0).standard_normal((3, 4))
    for mode in MODES:
        with F.mode(mode):
            x = t64(x0)
            loss = (x.softmax(-1) * x.tanh()).sum()
            loss.backward(create_graph=True)
            assert isinstance(x.grad, Tensor) and x.grad.requires_grad
            plain = t64(x0)
            (plain.softmax(-1) * plain.tanh()).sum().backward()
            np.testing.assert_allclose(x.grad.numpy(), plain.grad, rtol=1e-13, atol=1e-15)
            xt = torch.tensor(x0, requires_grad=True)
            (gt,) = torch.autograd.grad((xt.softmax(-1) * xt.tanh()).sum(), xt, create_graph=True)
            (ht,) = torch.autograd.grad((gt * gt).sum(), xt)
            (h,) = tg.grad((x.grad * x.grad).sum(), x)
            np.testing.assert_allclose(h.numpy(), ht.numpy(), rtol=1e-9, atol=1e-12)


def test_grad_errors_name_the_input():
    x, y = t64([1.0]), t64([2.0])
    with pytest.raises(RuntimeError, match="input 1 .* was not used"):
        tg.grad((x * 2).sum(), [x, y])
    assert tg.grad((x * 2).sum(), [x, y], allow_unused=True)[1] is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.grad((x * 2).sum(), [t64([1.0], requires_grad=False)])
    with pytest.raises(RuntimeError, match="one-element"):
        tg.grad(x * t64([1.0, 2.0]), [x])


class NumpyOnly(Function):
    """A user op whose backward calls NumPy directly: fine once, not on Tensors."""

    def forward(self, x):
        self.save_for_backward(x)
        return np.sin(x)

    def backward(self, g):
        return g * np.cos(self.saved[0])


@pytest.mark.host_only("compares .grad with host NumPy arrays")
def test_an_op_that_cannot_be_differentiated_twice_says_so():
    x = t64([0.3, 0.4])
    NumpyOnly.apply(x).sum().backward()  # first order works
    np.testing.assert_allclose(x.grad, np.cos([0.3, 0.4]))
    with pytest.raises(DoubleBackwardError, match="NumpyOnly cannot be differentiated twice.*get_array_module"):
        tg.grad(NumpyOnly.apply(x).sum(), [x], create_graph=True)
    q = t64(np.ones((1, 2, 2)))
    with pytest.raises(DoubleBackwardError, match="dropout"):
        with F.mode("rules"):
            tg.grad(F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).sum(), [q], create_graph=True)


@pytest.mark.host_only("compares .grad with host NumPy arrays")
def test_the_cross_entropy_rule_gives_the_textbook_gradient_bit_for_bit():
    """The rule's backward became a comparison (to run on Tensors): the values did not move."""
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 5, 6)
    targets[2] = -1
    with F.mode("rules"):
        x = Tensor(logits, requires_grad=True)
        (F.cross_entropy(x, targets) * 0.7).backward()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True)
    gx, valid, safe = probs.copy(), targets != -1, np.where(targets != -1, targets, 0)
    gx[np.arange(6), safe] -= 1
    gx *= (valid / valid.sum()).astype(np.float32)[:, None]
    gx *= np.float32(0.7)
    assert np.array_equal(x.grad, gx)


# ----------------------------------------------------------------------------- every op, every mode

@pytest.mark.parametrize("mode", MODES)
def test_second_derivatives_of_every_case_match_central_differences(mode):
    for name, case in CASES.items():
        fn, arrays = case(np.random.default_rng([1, zlib.crc32(name.encode())]))
        with F.mode(mode):
            assert gradgradcheck(fn, [t64(a) for a in arrays], n_directions=1, seed=3), name


def test_gradgradcheck_can_fail():
    """A backward whose own derivative is wrong: g * 3 * x^2 for x^3, computed on a detached x."""

    class Cube(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x * x

        def backward(self, g):
            (x,) = self.saved
            x = x.detach() if isinstance(x, Tensor) else x  # second derivative lost
            return g * 3 * x * x

    with pytest.raises(GradcheckError, match="second-derivative mismatch"):
        gradgradcheck(lambda x: Cube.apply(x), [t64([0.5, 1.5])])


def test_the_gradcheck_command_checks_second_derivatives(capsys):
    main(["gradcheck", "--order=2", "--ops=rules", "--cases=tanh,softmax,layer_norm,attention_causal"])
    out = capsys.readouterr().out
    assert "second derivatives" in out and "4 of 4 passed" in out


# ----------------------------------------------------------------------------- against PyTorch

def _functions():
    """(name, ours, theirs, input shapes, positive inputs): a dozen scalar functions."""
    TF = torch.nn.functional
    W = np.random.default_rng(7).standard_normal((4, 3))
    ids = np.array([0, 2, 1])
    return [
        ("tanh", lambda x: x.tanh().sum(), lambda x: x.tanh().sum(), False),
        ("softmax", lambda x: (x.softmax(-1) ** 2).sum(), lambda x: (x.softmax(-1) ** 2).sum(), False),
        ("log_softmax", lambda x: (x.log_softmax(-1) * x).sum(), lambda x: (x.log_softmax(-1) * x).sum(), False),
        ("gelu", lambda x: (x.gelu() * x).sum(), lambda x: (TF.gelu(x, approximate="tanh") * x).sum(), False),
        ("exp_log", lambda x: (x.exp() + (x * x + 1).log()).sum(), lambda x: (x.exp() + (x * x + 1).log()).sum(), False),
        ("sqrt_div", lambda x: ((x * x + 1).sqrt() / (x + 3)).sum(), lambda x: ((x * x + 1).sqrt() / (x + 3)).sum(), False),
        ("pow", lambda x: ((x * x + 1) ** 1.7).sum(), lambda x: ((x * x + 1) ** 1.7).sum(), False),
        ("sigmoid_mean", lambda x: x.sigmoid().mean() * x.sum(), lambda x: x.sigmoid().mean() * x.sum(), False),
        ("matmul", lambda x: ((x @ t64(W, False)).tanh() ** 2).sum(),
         lambda x: ((x @ torch.tensor(W)).tanh() ** 2).sum(), False),
        ("layer_norm", lambda x: (F.layer_norm(x, t64(np.ones(4) * 1.5, False)) ** 3).sum(),
         lambda x: (TF.layer_norm(x, (4,), torch.full((4,), 1.5, dtype=torch.float64)) ** 3).sum(), False),
        ("cross_entropy", lambda x: F.cross_entropy(x, ids) * x.max(),
         lambda x: TF.cross_entropy(x, torch.tensor(ids)) * x.max(), False),
        ("attention", lambda x: (F.scaled_dot_product_attention(x[None], x[None], x[None] * 2) ** 2).sum(),
         lambda x: (TF.scaled_dot_product_attention(x[None], x[None], x[None] * 2, is_causal=True) ** 2).sum(), False),
        ("linear_gelu", lambda x: F.linear(x, t64(W, False), activation="gelu").sum() * x.abs().sum(),
         lambda x: TF.gelu(x @ torch.tensor(W), approximate="tanh").sum() * x.abs().sum(), False),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_hessian_vector_products_equal_pytorchs(mode):
    rng = np.random.default_rng(0)
    x0, v0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for name, ours, theirs, _ in _functions():
        with F.mode(mode):
            _, hv = tg.autograd.hvp(ours, t64(x0, False), t64(v0, False))
        xt = torch.tensor(x0, requires_grad=True)
        (gt,) = torch.autograd.grad(theirs(xt), xt, create_graph=True)
        (ht,) = torch.autograd.grad((gt * torch.tensor(v0)).sum(), xt)
        np.testing.assert_allclose(hv.numpy(), ht.numpy(), rtol=1e-9, atol=1e-9, err_msg=f"{mode} {name}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["tanh", "softmax"])
def test_third_derivatives_equal_pytorchs(mode, name):
    x0 = np.random.default_rng(1).standard_normal((2, 5))
    w = np.random.default_rng(2).standard_normal((2, 5))
    with F.mode(mode):
        x = t64(x0)
        y = x.tanh() if name == "tanh" else x.softmax(-1)
        g1 = tg.grad((y * t64(w, False)).sum(), x, create_graph=True)[0]
        g2 = tg.grad((g1 * g1).sum(), x, create_graph=True)[0]
        (g3,) = tg.grad(g2.sum(), x)
    xt = torch.tensor(x0, requires_grad=True)
    yt = xt.tanh() if name == "tanh" else xt.softmax(-1)
    t1 = torch.autograd.grad((yt * torch.tensor(w)).sum(), xt, create_graph=True)[0]
    t2 = torch.autograd.grad((t1 * t1).sum(), xt, create_graph=True)[0]
    (t3,) = torch.autograd.grad(t2.sum(), xt)
    np.testing.assert_allclose(g3.numpy(), t3.numpy(), rtol=1e-9, atol=1e-12)


def test_the_helpers_equal_torch_func():
    tf = torch.func
    x0, v0 = np.random.default_rng(3).standard_normal(5), np.random.default_rng(4).standard_normal(5)
    xt, vt = torch.tensor(x0), torch.tensor(v0)
    scalar = lambda x: (x.tanh() * x.exp()).sum() + (x.softmax(-1) * x).sum()  # noqa: E731
    vector = lambda x: (x.tanh() * x.exp()).softmax(-1)  # noqa: E731
    A, x, v = tg.autograd, t64(x0, False), t64(v0, False)
    np.testing.assert_allclose(A.hessian(scalar, x).numpy(), tf.hessian(scalar)(xt).numpy(), atol=1e-12)
    np.testing.assert_allclose(A.hvp(scalar, x, v)[1].numpy(),
                               tf.jvp(tf.grad(scalar), (xt,), (vt,))[1].numpy(), atol=1e-12)
    np.testing.assert_allclose(A.jacobian(vector, x).numpy(), tf.jacrev(vector)(xt).numpy(), atol=1e-12)
    np.testing.assert_allclose(A.jvp(vector, x, v)[1].numpy(), tf.jvp(vector, (xt,), (vt,))[1].numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(A.vjp(vector, x, v)[1].numpy(), tf.vjp(vector, xt)[1](vt)[0].numpy(),
                               atol=1e-12)
    pair = lambda a, b: (a * b.tanh()).sum()  # noqa: E731  two inputs: a tuple of products
    hv = A.hvp(pair, (x, v), (v, x))[1]
    ref = tf.jvp(tf.grad(pair, argnums=(0, 1)), (xt, vt), (vt, xt))[1]
    for ours, theirs in zip(hv, ref):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)


@pytest.mark.host_only("compares .grad with host NumPy arrays")
def test_first_order_backward_is_unchanged_after_a_create_graph_pass():
    x0 = np.random.default_rng(5).standard_normal((2, 3, 4))
    for mode in MODES:
        with F.mode(mode):
            x = t64(x0)
            tg.grad((F.layer_norm(x, None).gelu() ** 2).sum(), x, create_graph=True)
            (F.layer_norm(x, None).gelu() ** 2).sum().backward()
        xt = torch.tensor(x0, requires_grad=True)
        TF = torch.nn.functional
        (TF.gelu(TF.layer_norm(xt, (4,)), approximate="tanh") ** 2).sum().backward()
        assert isinstance(x.grad, np.ndarray)
        np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_gpt_hessian_vector_product_equals_hugging_faces(mode, tmp_path):
    """A float64 GPT and transformers' GPT2LMHeadModel (eager attention: torch's fused CPU
    attention has no double backward) with the same weights: H v over every parameter."""
    transformers = pytest.importorskip("transformers")
    from tinygrad_gpt import manual_seed
    from tinygrad_gpt.model import GPT, GPTConfig
    from tinygrad_gpt.storage.pretrained import save_pretrained
    manual_seed(0)
    ours = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                         bias=True)).to(dtype=np.float64)
    rng = np.random.default_rng(0)
    ours.load_state_dict({n: (1.0 if ".ln_" in n and n.endswith("weight") else 0.0)
                          + (1.0 if "wte" in n or "wpe" in n else 0.3) * rng.standard_normal(v.shape)
                          for n, v in ours.state_dict().items()})
    save_pretrained(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager",
                                                      torch_dtype=torch.float64).eval()
    x, y = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
    names = [n for n, _ in ours.named_parameters()]
    params, theirs = dict(ours.named_parameters()), dict(hf.named_parameters())
    vs = [rng.standard_normal(params[n].shape) for n in names]
    with F.mode(mode):
        loss = ours(x, y)[1]
        gs = tg.grad(loss, [params[n] for n in names], create_graph=True)
        hv = tg.grad(sum((g * t64(v, False)).sum() for g, v in zip(gs, vs)), [params[n] for n in names])
    logits = hf(torch.tensor(x)).logits
    ref_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), torch.tensor(y).reshape(-1))
    ref_g = torch.autograd.grad(ref_loss, [theirs[n] for n in names], create_graph=True)
    ref_hv = torch.autograd.grad(sum((g * torch.tensor(v)).sum() for g, v in zip(ref_g, vs)),
                                 [theirs[n] for n in names])
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for name, ours_hv, ref in zip(names, hv, ref_hv):
        assert np.abs(ref.numpy()).max() > 1e-3, name
        np.testing.assert_allclose(ours_hv.numpy(), ref.numpy(), rtol=1e-8, atol=1e-8, err_msg=name)
