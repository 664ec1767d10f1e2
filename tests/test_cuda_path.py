"""The CuPy path, on the CuPy stand-in (``TINYGRAD_GPT_FAKE_CUPY=1 pytest --device=cuda``).

The stand-in (tests/fakecupy) refuses every implicit trip between device and host, as CuPy
does, counts the explicit ones, and sums cupyx.scatter_add's repeated indices in a random
order, as atomics do. These tests hold the project to what that shows: a training step
waits for the device twice (its loss and its gradient norm), dropout keeps one generator,
ids are checked on the host, and the embedding's backward gives the same bits every time.
They run under ``--device=cuda``; those that read the stand-in's counters skip on a real GPU.
"""
import numpy as np
import pytest

from tinygrad_gpt import Tensor, backend, functional as F, manual_seed
from tinygrad_gpt.fast import kernels
from tinygrad_gpt.text.data import Dataset
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import AdamW
from tinygrad_gpt.run.train import TrainConfig, _train_step


@pytest.fixture
def cupy(device):
    """CuPy, real or the stand-in, when the suite runs on cuda."""
    if device != "cuda":
        pytest.skip("runs under --device=cuda (a GPU, or TINYGRAD_GPT_FAKE_CUPY=1 for the stand-in)")
    return backend._cupy


@pytest.fixture
def standin(cupy):
    """The stand-in, whose counters these tests read."""
    if not getattr(cupy, "STAND_IN", False):
        pytest.skip("counts host syncs on the CuPy stand-in (TINYGRAD_GPT_FAKE_CUPY=1 --device=cuda)")
    return cupy


def syncs(cupy):
    return cupy.COUNTS["sync"]


# ----------------------------------------------------------------------------- the stand-in itself

def test_the_stand_in_refuses_implicit_numpy(standin):
    cupy = standin
    x = cupy.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    for call in (lambda: np.asarray(x), lambda: np.exp(x), lambda: np.float32(x.sum()),
                 lambda: x + np.ones(3), lambda: np.ones(3) + x, lambda: np.sum(x), lambda: cupy.exp(np.ones(2))):
        with pytest.raises(TypeError):
            call()
    assert isinstance(x.sum(), cupy.ndarray) and x.sum().shape == ()  # reductions stay on the device
    before = syncs(cupy)
    assert float(x.sum()) == 15.0 and x.get().sum() == 15.0 and cupy.asnumpy(x).shape == (2, 3)
    assert syncs(cupy) == before + 3
    assert not kernels.usable(x)  # no numba kernel takes a device array


def test_the_stand_in_wraps_integer_indices_around(standin):
    cupy = standin
    x = cupy.asarray(np.arange(3.0))
    assert x[cupy.asarray(np.array([3, -4]))].get().tolist() == [0.0, 2.0]  # as CuPy, no IndexError


def test_the_stand_in_scatter_add_sums_in_no_fixed_order(standin):
    cupy = standin
    """What the embedding's backward has to avoid: cupyx.scatter_add's float32 sums change."""
    import cupyx
    ids, rows = _repeated_picks(cupy)
    results = set()
    for _ in range(20):
        out = cupy.zeros((5, 3), dtype=np.float32)
        cupyx.scatter_add(out, ids, rows)
        results.add(out.get().tobytes())
    assert len(results) > 1


# ----------------------------------------------------------------------------- what it found

def _repeated_picks(cupy):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, (8, 64))                                  # every row picked ~100 times
    rows = (rng.standard_normal((8, 64, 3)) * 10.0 ** rng.integers(-4, 4, (8, 64, 1))).astype(np.float32)
    return cupy.asarray(ids), cupy.asarray(rows)


def test_embedding_backward_gives_the_same_bits_every_time(cupy):
    ids, rows = _repeated_picks(cupy)
    results = set()
    for _ in range(10):
        out = cupy.zeros((5, 3), dtype=np.float32)
        backend.scatter_add(out, ids, rows)
        results.add(out.get().tobytes())
    assert len(results) == 1
    want = np.zeros((5, 3))
    np.add.at(want, ids.get(), rows.get().astype(np.float64))
    np.testing.assert_allclose(np.frombuffer(results.pop(), np.float32).reshape(5, 3), want, rtol=1e-5, atol=1e-3)


def test_embedding_backward_sums_runs_of_any_length(cupy):
    """Runs of 1 to 70 equal rows, negative ids, and one pick: the doubling sums match NumPy's."""
    rng = np.random.default_rng(1)
    for ids in (np.repeat(np.arange(7), np.arange(1, 71, 10)), -np.arange(1, 8), np.array([2])):
        rows = rng.standard_normal(ids.shape + (4,))
        out = cupy.asarray(rng.standard_normal((9, 4)))
        want = out.get()
        np.add.at(want, ids, rows)
        backend.scatter_add(out, cupy.asarray(ids), cupy.asarray(rows))
        np.testing.assert_allclose(out.get(), want, rtol=1e-12, atol=1e-12)


def test_cross_entropy_composed_keeps_float32_on_the_device(cupy):
    logits = Tensor(np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    loss = F.cross_entropy_composed(logits, np.array([0, 4, -1, 2]))
    assert loss.device == "cuda" and loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), F.cross_entropy(logits, np.array([0, 4, -1, 2])).item(), rtol=1e-6)


def test_ids_are_checked_on_the_host_before_they_go_to_the_device(standin):
    cupy = standin
    weight = Tensor(np.ones((5, 2), np.float32), requires_grad=True)
    before = syncs(cupy)
    F.embedding(np.array([[0, 4]]), weight)
    F.cross_entropy(weight, np.array([0, 1, 1, -1, 0]))
    assert syncs(cupy) == before  # host ids: checked on the host, no wait for the device
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        F.embedding(np.array([5]), weight)
    with pytest.raises(ValueError, match="target ids must be in"):  # on the device: checked there
        F.cross_entropy(weight, cupy.asarray(np.array([0, 1, 2, 3, 7])))


def test_out_of_range_indices_are_refused_on_the_device_too(standin):
    """CuPy wraps an out-of-range integer index around; a Tensor's index is checked instead:
    host ids on the host before they are copied (no wait), device ids on the device (one wait
    for all of an index's arrays), and the embedding's ids, checked already, not again."""
    cupy = standin
    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    before = syncs(cupy)
    assert x[np.array([2, -3])].shape == (2, 4) and x[[0, 2], 1:].shape == (2, 3)
    assert x[None, ..., np.array([3, -4])].shape == (1, 3, 2)
    assert syncs(cupy) == before  # host ids: no wait
    for index, bad in ((np.array([0, 3]), "3 is out of bounds for axis 0 with size 3"),
                       ([-4], "-4 is out of bounds for axis 0"),
                       ((slice(None), np.array([4])), "4 is out of bounds for axis 1 with size 4"),
                       ((Ellipsis, np.array([[0], [-5]])), "-5 is out of bounds for axis 1"),
                       ((np.array([True, False, True]), np.array([0, 9])), "9 is out of bounds for axis 1"),
                       ((True, np.array([0, 3], np.uint8)), "3 is out of bounds for axis 0")):
        with pytest.raises(IndexError, match=bad):
            x[index]
    assert syncs(cupy) == before
    on_device = cupy.asarray(np.array([1, 2]))
    picked = x[on_device, on_device]
    assert syncs(cupy) == before + 1  # both arrays in one wait
    assert picked.numpy().tolist() == [5.0, 10.0]
    for index in (cupy.asarray(np.array([0, 3])), (on_device, Tensor(np.array([0, -5])))):
        with pytest.raises(IndexError, match="out of bounds"):
            x[index]
    before = syncs(cupy)
    F.embedding(cupy.asarray(np.array([0, 2])), x)  # checked once by embedding itself
    assert syncs(cupy) == before + 1


def test_dropout_uses_one_generator(standin):
    cupy = standin
    manual_seed(0)
    x = Tensor(np.ones((4, 8), np.float32))
    made = cupy.COUNTS["generators"]
    backend._cuda_rng(0)  # the process's generator exists from here on
    made = cupy.COUNTS["generators"]
    a = [F.dropout(x, 0.5).numpy() for _ in range(5)]
    assert cupy.COUNTS["generators"] == made
    assert len({m.tobytes() for m in a}) == 5          # a fresh mask each call
    manual_seed(0)
    assert all((F.dropout(x, 0.5).numpy() == m).all() for m in a)  # the host seed decides them all


def _step_setup(accumulate, dropout):
    manual_seed(3)
    text = np.random.default_rng(0).integers(0, 11, 2000)
    dataset = Dataset(text, block_size=8)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8, dropout=dropout))
    model.train()
    assert model.transformer.wte.weight.device == "cuda"
    cfg = TrainConfig(batch_size=4, block_size=8, gradient_accumulation_steps=accumulate, grad_clip=1.0)
    return model, AdamW(model.parameters(), lr=1e-3), dataset, cfg, np.random.default_rng(1)


@pytest.mark.parametrize("accumulate, dropout", [(1, 0.0), (3, 0.1)])
def test_a_training_step_waits_for_the_device_twice(standin, accumulate, dropout):
    cupy = standin
    """The loss and the gradient norm; nothing else reads the device during a step."""
    model, opt, dataset, cfg, rng = _step_setup(accumulate, dropout)
    _train_step(model, opt, dataset, cfg, 1e-3, rng)  # the first step makes the optimizer's state
    for _ in range(3):
        before = dict(cupy.COUNTS)
        _train_step(model, opt, dataset, cfg, 1e-3, rng)
        assert cupy.COUNTS["sync"] - before.get("sync", 0) == 2
        assert cupy.COUNTS["sync:float"] - before.get("sync:float", 0) == 2
        # host -> device copies: the batch's ids and targets, per micro-batch, and nothing else
        assert cupy.COUNTS["h2d"] - before.get("h2d", 0) == 2 * accumulate


def test_number_operands_go_to_the_device_once(standin):
    cupy = standin
    x = Tensor(np.ones(3, np.float32))
    (x * 0.25 + 3).numpy()
    before = cupy.COUNTS["h2d"]
    for _ in range(3):
        y = x * 0.25 + 3
    assert cupy.COUNTS["h2d"] == before  # made once, then reused
    np.testing.assert_array_equal(y.numpy(), 3.25)
    assert np.signbit((x * -0.0).numpy()).all() and not np.signbit((x * 0.0).numpy()).any()
