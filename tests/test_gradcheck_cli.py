"""The ``gradcheck`` command: every op passes, and a broken backward is caught."""
import subprocess
import sys

import pytest

from tinygrad_gpt import fast, ops, rules
from tinygrad_gpt import tensor as tensor_module
from tinygrad_gpt.commands.cli import main
from tinygrad_gpt.function import Function, sum_to
from tinygrad_gpt.commands.gradcheck import CASES, GradcheckConfig, check_case, run_all


def test_every_op_passes_and_the_table_is_readable():
    lines = []
    rows = run_all(GradcheckConfig(), print_fn=lines.append)
    assert [r.name for r in rows] == list(CASES)
    assert all(r.ok for r in rows), [r.name for r in rows if not r.ok]
    assert all(r.max_abs < 1e-7 and r.max_rel < 1e-5 for r in rows)
    assert "max abs err" in lines[1] and "max rel err" in lines[1]
    assert sum(line.endswith("PASS") for line in lines) == len(CASES)
    assert lines[-1] == f"{len(CASES)} of {len(CASES)} passed"


@pytest.mark.parametrize("mode,modules", [("rules", (ops, rules)), ("fast", (fast,))])
def test_the_cases_reach_every_function_of_the_rules_and_the_fast_layer(monkeypatch, mode, modules):
    """A new op without a gradcheck case fails here: each Function's backward must run, the
    rules' in the "rules" mode and the fast ops' in the "fast" mode."""
    seen = set()
    propagate = tensor_module._propagate

    def spy(ctx, g, grads):
        seen.add(type(ctx))
        return propagate(ctx, g, grads)

    monkeypatch.setattr(tensor_module, "_propagate", spy)
    run_all(GradcheckConfig(ops=mode), print_fn=lambda *a: None)
    functions = {c for m in modules for c in vars(m).values()
                 if isinstance(c, type) and issubclass(c, Function) and c is not Function}
    functions.discard(ops.ToDevice)  # needs a second device: tests/test_tensor.py checks its gradient on the GPU
    assert functions and not functions - seen, sorted(c.__name__ for c in functions - seen)


@pytest.mark.parametrize("seed", [1, 2])
def test_other_seeds_draw_other_shapes_and_still_pass(seed):
    rows = run_all(GradcheckConfig(seed=seed), print_fn=lambda *a: None)
    assert all(r.ok for r in rows), [r.name for r in rows if not r.ok]
    default = {r.name: r.shapes for r in run_all(GradcheckConfig(), print_fn=lambda *a: None)}
    assert sum(r.shapes != default[r.name] for r in rows) > len(rows) // 2


def test_the_command_passes(capsys):
    assert main(["gradcheck", "--cases=tanh,layer_norm,attention_causal"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 passed" in out and "FAIL" not in out


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_python_dash_m_gradcheck_exits_zero():
    result = subprocess.run([sys.executable, "-m", "tinygrad_gpt", "gradcheck"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CASES)} of {len(CASES)} passed" in result.stdout


def test_a_broken_backward_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(ops.Tanh, "backward", lambda self, g: g)  # forgot the 1 - tanh^2 factor
    rows = run_all(GradcheckConfig(cases="tanh,exp"), print_fn=print)
    assert [(r.name, r.ok) for r in rows] == [("tanh", False), ("exp", True)]
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 of 2 passed; FAILED: tanh" in out
    assert main(["gradcheck", "--cases=tanh,exp"]) == 1
    assert "1 of 2 gradient checks failed: tanh" in capsys.readouterr().err


def test_a_slightly_wrong_fused_backward_is_caught(monkeypatch):
    """A 0.1% error in layer norm's input gradient is far above the tolerance."""
    backward = fast.LayerNorm.backward

    def off(self, g):
        gx, *rest = backward(self, g)
        return (gx * 1.001, *rest)

    monkeypatch.setattr(fast.LayerNorm, "backward", off)
    row = check_case("layer_norm", GradcheckConfig())
    assert not row.ok and row.max_abs > 1e-6


def test_a_forgotten_minus_sign_is_caught(monkeypatch):
    def backward(self, g):  # d/dy (x - y) is -1, not 1
        return sum_to(g, self.shapes[0]), sum_to(g, self.shapes[1])
    monkeypatch.setattr(ops.Sub, "backward", backward)
    assert not check_case("sub", GradcheckConfig()).ok
    assert check_case("add", GradcheckConfig()).ok


@pytest.mark.parametrize("flag", ["--cases=nope", "--ops=nope", "--eps=0", "--rtol=-1", "--device=tpu"])
def test_bad_flags(flag, capsys):
    assert main(["gradcheck", flag]) == 2
    assert capsys.readouterr().err.startswith("error: --")
