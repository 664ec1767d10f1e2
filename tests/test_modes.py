"""The three modes, "composed", "rules" and "fast": one GPT trains to the same losses and
gradients in each; "composed" builds its graph from primitive ops only; the switch itself; and
importing the package changes nothing outside it."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_gpt import Tensor, functional as F, manual_seed
from tinygrad_gpt.backend import to_numpy
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import AdamW, clip_grad_norm_
from tinygrad_gpt.commands.viz import to_dot

FUSED = {"Linear", "Linear+GELU", "Softmax", "LogSoftmax", "LayerNorm", "Attention", "BlockedAttention",
         "CrossEntropy", "Gelu"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small_gpt(dtype=np.float64):
    manual_seed(3)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8, dropout=0.0))
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def _train(mode, steps=3):
    """Losses and every parameter's gradient at each of ``steps`` AdamW steps, in ``mode``."""
    model = _small_gpt()
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))  # one batch, learnt
    losses, grads = [], []
    with F.mode(mode):
        for _ in range(steps):
            _, loss = model(idx, targets)
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            losses.append(loss.item())
            grads.append([to_numpy(p.grad) for p in model.parameters()])
            opt.step()
            opt.zero_grad()
    return losses, grads


def test_a_gpt_trains_to_the_same_losses_and_gradients_in_every_mode():
    """Three AdamW steps of a small GPT in float64: the losses and every gradient of every step
    agree across the modes to rtol 1e-9."""
    results = {mode: _train(mode) for mode in F.MODES}
    losses, grads = results["fast"]
    for mode in ("rules", "composed"):
        np.testing.assert_allclose(results[mode][0], losses, rtol=1e-9)
        for step, (got, expected) in enumerate(zip(results[mode][1], grads)):
            assert len(got) == len(expected)
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=f"{mode}, step {step}")
    assert losses[-1] < losses[0]  # and training does something: the batch is being learnt


def _heads(mode):
    model = _small_gpt(np.float32)
    with F.mode(mode):
        _, loss = model(np.array([[0, 1, 2, 3, 4, 5]]), np.array([[1, 2, 3, 4, 5, 6]]))
    return set(re.findall(r'label="([^"\\]+)\\n', to_dot(loss)))


def test_composed_builds_the_graph_from_primitive_ops_only():
    composed, rules, fast = _heads("composed"), _heads("rules"), _heads("fast")
    assert not composed & FUSED, composed & FUSED
    assert {"MatMul", "Tanh", "Exp", "Log", "MaskedFill", "GetItem"} <= composed
    assert {"Linear", "Gelu", "LayerNorm", "Attention", "CrossEntropy"} <= rules
    assert {"Linear+GELU", "LayerNorm", "Attention", "CrossEntropy"} <= fast


def test_mode_is_a_context_manager_and_a_decorator():
    assert F.get_mode() == "fast"
    with F.mode("rules"):
        assert F.get_mode() == "rules"
        with F.mode("composed"):
            assert F.get_mode() == "composed"
        assert F.get_mode() == "rules"
    assert F.get_mode() == "fast"

    @F.mode("composed")
    def inside(depth):
        assert F.get_mode() == "composed"
        return inside(depth - 1) if depth else F.get_mode()
    assert inside(2) == "composed" and F.get_mode() == "fast"
    with pytest.raises(ValueError, match="unknown mode 'flash'"):
        F.mode("flash")
    with pytest.raises(ZeroDivisionError), F.mode("rules"):
        1 / 0
    assert F.get_mode() == "fast"  # restored after an error too


@pytest.mark.parametrize("command", ["train", "sample", "gradcheck"])
def test_the_commands_take_ops(command):
    from tinygrad_gpt.commands.cli import COMMANDS, parse_flags
    from tinygrad_gpt.errors import ConfigError
    config_cls = COMMANDS[command][0]
    assert parse_flags(config_cls, ["--ops=rules"]).ops == "rules"
    with pytest.raises(ConfigError, match="--ops must be one of composed, rules, fast"):
        parse_flags(config_cls, ["--ops=flash"]).validate()


def test_gradcheck_checks_the_rules_and_the_composed_ops():
    from tinygrad_gpt.commands.gradcheck import GradcheckConfig, run_all
    for mode in ("rules", "composed"):
        lines = []
        rows = run_all(GradcheckConfig(cases="layer_norm,attention_causal,cross_entropy", ops=mode),
                       print_fn=lines.append)
        assert all(r.ok for r in rows) and f"the {mode} ops" in lines[0]


def test_importing_the_package_changes_nothing_outside_it():
    """No numba, no mallopt: ctypes.CDLL is watched for a lookup of mallopt during the import."""
    code = """if True:
        import ctypes, sys
        looked_up = []
        class Watched(ctypes.CDLL):
            def __getattr__(self, name):
                looked_up.append(name)
                return super().__getattr__(name)
        ctypes.CDLL = Watched
        import tinygrad_gpt, tinygrad_gpt.commands.cli, tinygrad_gpt.run.train, tinygrad_gpt.commands.viz
        from tinygrad_gpt.run import settings
        assert 'numba' not in sys.modules, 'numba was imported'
        assert not settings.tuned and 'mallopt' not in looked_up, looked_up
        assert settings.tune_allocator_for_training() is False and not settings.tuned  # an opt-in
        print('ok')
    """
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TINYGRAD_GPT_TUNE_MALLOC", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_drawing_a_plot_does_not_import_the_training_loop():
    code = "import sys, tinygrad_gpt.commands.viz; assert 'tinygrad_gpt.run.train' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_rule_files_never_import_the_fast_layer():
    """rules.py, ops.py, function.py and tensor.py know nothing of fast/ (only functional.py,
    one floor up, knows both)."""
    for name in ("rules.py", "ops.py", "function.py", "tensor.py", "backend.py", "errors.py"):
        text = open(os.path.join(ROOT, "tinygrad_gpt", name), encoding="utf-8").read()
        assert not re.search(r"^\s*(from|import)\s+\S*fast", text, re.M), name


def test_numba_is_imported_on_first_use_and_never_with_tinygrad_gpt_numba_0():
    code = """if True:
        import sys
        import numpy as np
        from tinygrad_gpt import Tensor, functional as F
        from tinygrad_gpt.fast import kernels
        F.layer_norm(Tensor(np.ones((4, 8), np.float32)), Tensor(np.ones(8, np.float32)))
        print('numba' in sys.modules, kernels.enabled)
    """
    for flag, expected in (("0", "False False"), ("1", "True True")):
        env = dict(os.environ, PYTHONPATH=ROOT, TINYGRAD_GPT_NUMBA=flag)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        if flag == "1" and result.stdout.strip() == "False False":
            pytest.skip("numba is not installed (the numba extra: pip install -e \".[numba]\")")
        assert result.stdout.strip() == expected


def _op_names(t):
    return {node._ctx.name for node in t._topo() if node._ctx is not None}


def test_the_tensor_methods_honour_the_composed_mode():
    """x.softmax, x.log_softmax and x.gelu build only primitive nodes under "composed", and
    their fused ones otherwise."""
    x = Tensor(np.array([[0.5, -1.0, 2.0]]), requires_grad=True)
    fused = {"Softmax", "LogSoftmax", "Gelu"}
    with F.mode("composed"):
        composed = _op_names(x.softmax(-1)) | _op_names(x.log_softmax(-1)) | _op_names(x.gelu())
    assert composed and not composed & fused, composed
    with F.mode("rules"):
        assert {"Softmax"} <= _op_names(x.softmax(-1)) and {"Gelu"} <= _op_names(x.gelu())


def test_set_mode_switches_until_switched_back_and_works_as_a_context_manager():
    from tinygrad_gpt import modes
    assert F.get_mode() == "fast"
    try:
        F.set_mode("rules")
        assert F.get_mode() == "rules" and modes.current() is modes.RULES
        with F.set_mode("composed"):
            assert F.get_mode() == "composed"
        assert F.get_mode() == "rules"
    finally:
        F.set_mode("fast")
    with pytest.raises(ValueError, match="unknown mode 'quick'"):
        F.set_mode("quick")
    assert F.get_mode() == "fast"


def test_a_mode_never_entered_changes_nothing_and_says_so():
    import gc
    with pytest.warns(RuntimeWarning, match=r"never entered.*set_mode\('rules'\)"):
        m = F.mode("rules")
        assert "not active" in repr(m) and F.get_mode() == "fast"
        del m
        gc.collect()
    with F.mode("rules") as m:
        assert "active" in repr(m) and "not active" not in repr(m)


def test_a_mode_with_a_rule_replaced_runs_it_everywhere_the_rule_would():
    from tinygrad_gpt import modes, rules
    calls = []

    class MySoftmax(rules.Softmax):
        def forward(self, x, axis=-1):
            calls.append(x.shape)
            return super().forward(x, axis)

    x = Tensor(np.array([[1.0, 2.0]]))
    with F.mode(modes.RULES.replacing({rules.Softmax: MySoftmax}, name="mine")):
        y = F.softmax(x)
        assert F.get_mode() == "mine"
    assert calls == [(1, 2)] and np.allclose(y.numpy().sum(), 1.0)
