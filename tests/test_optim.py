import copy
import math

import numpy as np
import pytest

from tinygrad_gpt import Tensor
from tinygrad_gpt.backend import default_device, to_device, to_numpy
from tinygrad_gpt.nn import Parameter
from tinygrad_gpt.fast import AdamW as FastAdamW
from tinygrad_gpt.optim import SGD, AdamW, clip_grad_norm_, cosine_lr

# AdamW's rule (optim.py), and the fast layer's group-at-a-time AdamW: both must match torch
ADAMWS = pytest.mark.parametrize("AdamW", [AdamW, FastAdamW], ids=["rule", "fast"])

SHAPES = [(3, 4), (4,), (2, 2, 3)]
STEPS = 10


def _initial_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def dev(a):
    """A host array on the device the suite runs on (where the parameters live)."""
    return to_device(np.asarray(a), default_device())


def _targets(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _loss_ours(params, targets):
    """sum_i sum (p_i - t_i)^4 / 4 + sum p_i^2: non-quadratic, so steps differ in size."""
    total = None
    for p, t in zip(params, targets):
        d = p - Tensor(t)
        term = (d * d * d * d).sum() * 0.25 + (p * p).sum()
        total = term if total is None else total + term
    return total


def _groups(params, wds=(0.1, 0.0)):
    """Two groups with different weight decay: the first parameter alone, then the rest."""
    return [{"params": params[:1], "weight_decay": wds[0]},
            {"params": params[1:], "weight_decay": wds[1]}]


def _run_ours(make_opt, steps=STEPS, seed=0):
    params = [Parameter(a, dtype=np.float64) for a in _initial_arrays(seed)]
    opt = make_opt(params)
    targets = _targets()
    for _ in range(steps):
        opt.zero_grad()
        _loss_ours(params, targets).backward()
        opt.step()
    return [p.numpy() for p in params], opt, params


def _run_torch(make_opt, steps=STEPS, seed=0):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _initial_arrays(seed)]
    opt = make_opt(torch, params)
    targets = [torch.tensor(t) for t in _targets()]
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - t) ** 4).sum() * 0.25 + (p * p).sum() for p, t in zip(params, targets))
        loss.backward()
        opt.step()
    return [p.detach().numpy() for p in params]


def _assert_all_close(ours, theirs, rtol=1e-12, atol=1e-13):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- SGD

def test_sgd_single_step_by_hand():
    w = Parameter(np.array([1.0, -2.0]), dtype=np.float64)
    opt = SGD([w], lr=0.1, weight_decay=0.5)
    (w * w).sum().backward()   # g = 2w
    opt.step()
    np.testing.assert_allclose(w.numpy(), [1.0 - 0.1 * (2.0 + 0.5), -2.0 - 0.1 * (-4.0 - 1.0)], rtol=1e-15)


def test_sgd_matches_torch():
    ours, _, _ = _run_ours(lambda ps: SGD(_groups(ps), lr=0.01))
    theirs = _run_torch(lambda torch, ps: torch.optim.SGD(_groups(ps), lr=0.01))
    _assert_all_close(ours, theirs)


def test_sgd_momentum_matches_torch():
    ours, _, _ = _run_ours(lambda ps: SGD(_groups(ps), lr=0.01, momentum=0.9))
    theirs = _run_torch(lambda torch, ps: torch.optim.SGD(_groups(ps), lr=0.01, momentum=0.9))
    _assert_all_close(ours, theirs)


def test_sgd_moves_parameters():
    ours, _, _ = _run_ours(lambda ps: SGD(ps, lr=0.01, momentum=0.9))
    assert all(not np.allclose(a, b) for a, b in zip(ours, _initial_arrays()))


# ----------------------------------------------------------------------------- AdamW

@ADAMWS
def test_adamw_matches_torch_with_param_groups(AdamW):
    ours, _, _ = _run_ours(lambda ps: AdamW(_groups(ps, (0.3, 0.0)), lr=0.05, betas=(0.8, 0.95)))
    theirs = _run_torch(lambda torch, ps: torch.optim.AdamW(_groups(ps, (0.3, 0.0)), lr=0.05,
                                                            betas=(0.8, 0.95)))
    _assert_all_close(ours, theirs)


@ADAMWS
def test_adamw_default_options_match_torch(AdamW):
    ours, _, _ = _run_ours(lambda ps: AdamW(ps))
    theirs = _run_torch(lambda torch, ps: torch.optim.AdamW(ps))
    _assert_all_close(ours, theirs)


def test_adamw_weight_decay_is_decoupled():
    """With zero gradient, AdamW's decay is a pure shrink p *= 1 - lr * wd (no Adam scaling)."""
    w = Parameter(np.array([2.0, -4.0]), dtype=np.float64)
    opt = AdamW([w], lr=0.1, weight_decay=0.5)
    w.grad = dev(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(w.numpy(), np.array([2.0, -4.0]) * (1 - 0.1 * 0.5), rtol=1e-15)


def test_adamw_first_step_is_lr_sign_of_grad():
    w = Parameter(np.array([1.0, 1.0, 1.0]), dtype=np.float64)
    opt = AdamW([w], lr=0.01, weight_decay=0.0)
    w.grad = dev(np.array([3.0, -0.5, 100.0]))
    opt.step()
    np.testing.assert_allclose(w.numpy(), 1.0 - 0.01 * np.sign(to_numpy(w.grad)), rtol=1e-7)


def test_group_weight_decay_is_per_group():
    ps = [Parameter(np.ones(2), dtype=np.float64), Parameter(np.ones(2), dtype=np.float64)]
    opt = AdamW(_groups(ps, (0.5, 0.0)), lr=0.1)
    for p in ps:
        p.grad = dev(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(ps[0].numpy(), 0.95)
    np.testing.assert_allclose(ps[1].numpy(), 1.0)


def test_step_skips_params_without_grad():
    a, b = Parameter(np.ones(2), dtype=np.float64), Parameter(np.ones(2), dtype=np.float64)
    opt = AdamW([a, b], lr=0.1, weight_decay=0.1)
    a.grad = dev(np.ones(2))
    opt.step()
    np.testing.assert_array_equal(b.numpy(), np.ones(2))
    assert not np.allclose(a.numpy(), 1.0)


def test_optimizer_rejects_empty_and_unknown_options():
    with pytest.raises(ValueError):
        AdamW([])
    with pytest.raises(ValueError, match="unknown"):
        SGD([{"params": [Parameter(np.ones(2))], "nesterov": True}])


def test_float32_update_stays_float32():
    w = Parameter(np.ones(3, np.float32))
    opt = AdamW([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    assert w.dtype == np.float32


def test_optimizer_zero_grad():
    w = Parameter(np.ones(3))
    opt = SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.zero_grad()
    assert w.grad is None
    (w * w).sum().backward()
    grad = w.grad
    opt.zero_grad(set_to_none=False)  # as in PyTorch: zeros written into the same array
    assert w.grad is grad and not grad.any()
    opt.zero_grad(set_to_none=True)
    assert w.grad is None


# ----------------------------------------------------------------------------- clipping

def _grads_for_clipping(scale):
    rng = np.random.default_rng(4)
    return [rng.standard_normal(s) * scale for s in SHAPES]


@pytest.mark.parametrize("scale,max_norm", [(3.0, 1.0), (0.01, 1.0), (1.0, 0.5)])
def test_clip_grad_norm_matches_torch(scale, max_norm):
    torch = pytest.importorskip("torch")
    grads = _grads_for_clipping(scale)
    ours = [Parameter(np.zeros(g.shape), dtype=np.float64) for g in grads]
    for p, g in zip(ours, grads):
        p.grad = g.copy()
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(theirs, grads):
        p.grad = torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert isinstance(total, float)
    assert total == pytest.approx(float(total_t), rel=1e-13)
    assert total == pytest.approx(math.sqrt(sum((g * g).sum() for g in grads)), rel=1e-13)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_clip_grad_norm_result_norm():
    grads = _grads_for_clipping(5.0)
    params = [Parameter(np.zeros(g.shape), dtype=np.float64) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    before = clip_grad_norm_(params, 1.0)
    after = math.sqrt(sum((p.grad * p.grad).sum() for p in params))
    assert before > 1.0
    assert after == pytest.approx(1.0, rel=1e-5)
    # below the limit, gradients are left alone
    copies = [p.grad.copy() for p in params]
    clip_grad_norm_(params, 10.0)
    for p, c in zip(params, copies):
        np.testing.assert_array_equal(to_numpy(p.grad), c)


def test_clip_grad_norm_ignores_params_without_grad():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    a.grad = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm_([a, b], 100.0) == pytest.approx(5.0)
    assert b.grad is None
    assert clip_grad_norm_([b], 1.0) == 0.0


# ----------------------------------------------------------------------------- schedule

LR, MIN_LR, WARMUP, DECAY = 6e-4, 6e-5, 10, 110


def test_cosine_lr_key_points():
    assert cosine_lr(0, LR, WARMUP, DECAY, MIN_LR) == pytest.approx(LR * 1 / (WARMUP + 1))
    assert cosine_lr(5, LR, WARMUP, DECAY, MIN_LR) == pytest.approx(LR * 6 / (WARMUP + 1))
    assert cosine_lr(WARMUP, LR, WARMUP, DECAY, MIN_LR) == pytest.approx(LR)
    mid = WARMUP + (DECAY - WARMUP) // 2
    assert cosine_lr(mid, LR, WARMUP, DECAY, MIN_LR) == pytest.approx((LR + MIN_LR) / 2)
    assert cosine_lr(DECAY, LR, WARMUP, DECAY, MIN_LR) == pytest.approx(MIN_LR)
    assert cosine_lr(DECAY + 1, LR, WARMUP, DECAY, MIN_LR) == MIN_LR
    assert cosine_lr(10 * DECAY, LR, WARMUP, DECAY, MIN_LR) == MIN_LR


def test_cosine_lr_matches_nanogpt_formula_everywhere():
    def nanogpt(it):
        if it < WARMUP:
            return LR * (it + 1) / (WARMUP + 1)
        if it > DECAY:
            return MIN_LR
        ratio = (it - WARMUP) / (DECAY - WARMUP)
        return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)

    values = [cosine_lr(it, LR, WARMUP, DECAY, MIN_LR) for it in range(DECAY + 20)]
    assert values == pytest.approx([nanogpt(it) for it in range(DECAY + 20)], rel=1e-12)
    assert all(a < b for a, b in zip(values[:WARMUP], values[1:WARMUP + 1]))       # rising
    assert all(a >= b for a, b in zip(values[WARMUP:DECAY], values[WARMUP + 1:DECAY + 1]))  # falling


def test_cosine_lr_without_warmup():
    assert cosine_lr(0, LR, 0, DECAY, MIN_LR) == pytest.approx(LR)


# ----------------------------------------------------------------------------- state dicts

OPTIMIZERS = {
    "sgd": lambda ps: SGD(_groups(ps), lr=0.01),
    "sgd_momentum": lambda ps: SGD(_groups(ps), lr=0.01, momentum=0.9),
    "adamw": lambda ps: AdamW(_groups(ps, (0.2, 0.0)), lr=0.05, betas=(0.8, 0.95)),
    "fast_adamw": lambda ps: FastAdamW(_groups(ps, (0.2, 0.0)), lr=0.05, betas=(0.8, 0.95)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_from_state_dict_is_exact(name):
    make = OPTIMIZERS[name]
    uninterrupted, _, _ = _run_ours(make, steps=STEPS)
    # run half, save parameters and optimizer state, restore into fresh objects, run the rest
    half, opt, _ = _run_ours(make, steps=STEPS // 2)
    sd = copy.deepcopy(opt.state_dict())
    params = [Parameter(a.copy(), dtype=np.float64) for a in half]
    fresh = make(params)
    fresh.load_state_dict(sd)
    targets = _targets()
    for _ in range(STEPS - STEPS // 2):
        fresh.zero_grad()
        _loss_ours(params, targets).backward()
        fresh.step()
    for a, b in zip([p.numpy() for p in params], uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_resume_without_state_differs_for_adamw():
    """The check above is meaningful: dropping the state changes the result."""
    make = OPTIMIZERS["adamw"]
    uninterrupted, _, _ = _run_ours(make, steps=STEPS)
    half, _, _ = _run_ours(make, steps=STEPS // 2)
    params = [Parameter(a.copy(), dtype=np.float64) for a in half]
    fresh = make(params)
    targets = _targets()
    for _ in range(STEPS - STEPS // 2):
        fresh.zero_grad()
        _loss_ours(params, targets).backward()
        fresh.step()
    assert not np.allclose(params[0].numpy(), uninterrupted[0])


def test_adamw_state_dict_contents():
    _, opt, _ = _run_ours(OPTIMIZERS["adamw"], steps=3)
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2]
    for i, shape in enumerate(SHAPES):
        assert sd["state"][i]["step"] == 3
        assert sd["state"][i]["exp_avg"].shape == shape
        assert sd["state"][i]["exp_avg_sq"].shape == shape
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert [g["weight_decay"] for g in sd["param_groups"]] == [0.2, 0.0]
    assert sd["param_groups"][0]["lr"] == 0.05


def test_state_dict_is_a_copy():
    _, opt, params = _run_ours(OPTIMIZERS["adamw"], steps=2)
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][...] = 1e6
    assert not np.any(to_numpy(opt.state[id(params[0])]["exp_avg"]) == 1e6)


def test_load_state_dict_restores_group_options():
    _, opt, _ = _run_ours(OPTIMIZERS["adamw"], steps=2)
    opt.param_groups[1]["lr"] = 0.123
    sd = opt.state_dict()
    fresh = OPTIMIZERS["adamw"]([Parameter(a) for a in _initial_arrays()])
    fresh.load_state_dict(sd)
    assert fresh.param_groups[1]["lr"] == 0.123
    assert fresh.param_groups[0]["betas"] == (0.8, 0.95)


@pytest.mark.parametrize("name", ["sgd_momentum", "adamw"])
def test_load_state_dict_shape_mismatch_raises_and_changes_nothing(name):
    _, opt, _ = _run_ours(OPTIMIZERS[name], steps=2)
    sd = opt.state_dict()
    key = "momentum_buffer" if name == "sgd_momentum" else "exp_avg"
    sd["state"][2][key] = np.zeros((5,))
    params = [Parameter(a, dtype=np.float64) for a in _initial_arrays()]
    fresh = OPTIMIZERS[name](params)
    fresh.param_groups[0]["lr"] = 0.777
    with pytest.raises(ValueError, match=key):
        fresh.load_state_dict(sd)
    assert fresh.state == {}
    assert fresh.param_groups[0]["lr"] == 0.777


def test_load_state_dict_group_mismatch_raises():
    _, opt, _ = _run_ours(OPTIMIZERS["adamw"], steps=1)
    sd = opt.state_dict()
    params = [Parameter(a, dtype=np.float64) for a in _initial_arrays()]
    single_group = AdamW(params, lr=0.05)
    with pytest.raises(ValueError, match="groups"):
        single_group.load_state_dict(sd)


@ADAMWS
@pytest.mark.parametrize("skippers", [[2], [1, 2]])
def test_adamw_with_intermittent_gradients_matches_torch(skippers, AdamW):
    """Parameters that get no gradient on some steps. One alone falls behind the others of its
    group in step count, so the group is updated one parameter at a time from then on; two that
    skip together keep the group in step, and the flat update just skips those steps. Same as
    torch either way."""
    torch = pytest.importorskip("torch")
    arrays, targets = _initial_arrays(), _targets()
    ours = [Parameter(a, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    opt = AdamW(_groups(ours, (0.2, 0.1)), lr=0.05)
    topt = torch.optim.AdamW(_groups(theirs, (0.2, 0.1)), lr=0.05)
    for step in range(12):
        active = [0, 1, 2] if step % 3 else [i for i in range(3) if i not in skippers]
        opt.zero_grad()
        topt.zero_grad(set_to_none=True)
        _loss_ours([ours[i] for i in active], [targets[i] for i in active]).backward()
        sum(((theirs[i] - torch.tensor(targets[i])) ** 4).sum() * 0.25 + (theirs[i] * theirs[i]).sum()
            for i in active).backward()
        opt.step()
        topt.step()
    _assert_all_close([p.numpy() for p in ours], [p.detach().numpy() for p in theirs])


@pytest.mark.host_only("numba kernels take NumPy arrays only")
def test_adamw_kernel_leaves_non_contiguous_gradients_to_numpy(monkeypatch):
    """A gradient that is not C-contiguous (here a transposed array) sends its group through the
    NumPy path, with the same result as contiguous gradients through the kernel."""
    from tinygrad_gpt.fast import kernels
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    used = []
    adamw = kernels.adamw
    monkeypatch.setattr(kernels, "adamw", lambda *a: used.append(1) or adamw(*a))
    results = []
    for layout in (np.ascontiguousarray, np.asfortranarray):
        params = [Parameter(np.ones((4, 3)), dtype=np.float32), Parameter(np.ones(3), dtype=np.float32)]
        opt = FastAdamW(params, lr=0.01, weight_decay=0.1)
        grads = np.random.default_rng(5)
        for _ in range(2):
            for p in params:
                p.grad = layout(grads.standard_normal(p.shape).astype(np.float32))
            opt.step()
        results.append([p.numpy() for p in params])
    assert len(used) == 2 * 2  # two steps of two parameters, contiguous only
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.host_only("numba kernels take NumPy arrays only")),
                                      False])
def test_adamw_group_update_equals_one_parameter_at_a_time(monkeypatch, compiled):
    """The flat, chunked group update (several chunks here) in NumPy, or the optional numba
    kernel's one pass a parameter, gives bit for bit the arrays of updating each parameter
    alone with NumPy."""
    from tinygrad_gpt.fast import kernels
    from tinygrad_gpt.fast.chunks import CHUNK
    if compiled and not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    monkeypatch.setattr(kernels, "enabled", compiled)
    used = []
    if compiled:
        adamw = kernels.adamw
        monkeypatch.setattr(kernels, "adamw", lambda *a: used.append(1) or adamw(*a))

    class OneAtATime(FastAdamW):
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update_one(p, group, self.state.setdefault(id(p), {"step": 0}))

    shapes = [(CHUNK + 5,), (7, 3), (CHUNK // 2, 2), (1,)]
    results = []
    for cls in (FastAdamW, OneAtATime):
        params = [Parameter(np.ones(s), dtype=np.float32) for s in shapes]
        opt = cls(params, lr=0.01, weight_decay=0.1)
        grads = np.random.default_rng(4)
        for _ in range(3):
            for p in params:
                p.grad = dev(grads.standard_normal(p.shape).astype(np.float32))
            opt.step()
        results.append([p.numpy() for p in params] + [to_numpy(opt.state[id(p)]["exp_avg_sq"]) for p in params])
    assert sum(p.size for p in results[0][:4]) >= 2 * CHUNK
    assert bool(used) == compiled
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_fast_adamw_matches_the_rule(dtype, rtol):
    """fast.AdamW (flat groups, in place, numba where it loads) against the textbook rule of
    optim.AdamW: the same update, rounded in another order, so equal to a float rounding bound."""
    shapes = [(5, 3), (3,), (1,)]
    results = []
    for cls in (AdamW, FastAdamW):
        params = [Parameter(np.linspace(-1, 1, math.prod(s)).reshape(s), dtype=dtype) for s in shapes]
        opt = cls([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}],
                  lr=0.01, betas=(0.8, 0.95))
        grads = np.random.default_rng(7)
        for _ in range(5):
            for p in params:
                p.grad = dev(grads.standard_normal(p.shape).astype(dtype))
            opt.step()
        results.append([p.numpy() for p in params] + [to_numpy(opt.state[id(p)]["exp_avg"]) for p in params])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
