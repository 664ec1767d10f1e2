"""Non-finite numbers in a run: a NaN or infinite loss, gradient or weight is caught where it
appears, and weights that are not finite are never saved.

A step whose loss or gradient norm is not finite stops the run (``--skip_nonfinite=True`` drops the
step and counts it instead); the error names the iteration and where the last good checkpoint is.
"""
import math

import numpy as np

from ..backend import get_array_module
from ..errors import CheckpointError, TrainingError


def kept(run):
    """Where the last good checkpoint is, for an error message."""
    if run.saved_iter is None:
        return "no checkpoint was saved"
    return f"the previous checkpoint (iteration {run.saved_iter}) is intact in {run.ckpt_path}"


def nonfinite_step(run, it, loss, norm, log, lr, ms, print_fn):
    """A step whose loss or gradient norm is NaN or infinite: stop, or count it and go on."""
    fault = f"the loss became {loss}" if not math.isfinite(loss) else \
        f"the gradient norm became {norm} (loss {loss:.4f})"
    if not run.cfg.skip_nonfinite:
        raise TrainingError(f"{fault} at iteration {it}; {kept(run)} (--skip_nonfinite=True skips such "
                            f"steps; --detect_anomaly=True names the op that made the first nan or inf)")
    run.skipped += 1
    log.write({"iter": it, "skipped": True, "fault": fault, "lr": lr, "ms": ms})
    if run.skipped == 1 or it % run.cfg.log_interval == 0:
        print_fn(f"iter {it}: step skipped, {fault} ({run.skipped} skipped so far)")


def check_weights(run, it):
    """Non-finite weights are never saved; only a change from outside the training step can make them."""
    bad = nonfinite_weight(run.model)
    if bad is not None:
        raise TrainingError(f"the weight {bad} is not finite at iteration {it}; {kept(run)}")


def nonfinite_weight(model, grads=False):
    """The name of the first parameter (or its gradient) holding NaN or infinity, or None."""
    for name, p in model.named_parameters():
        x = p.grad if grads else p.data
        if x is not None and not bool(get_array_module(x).isfinite(x).all()):
            return name
    return None


def check_loaded_weights(model, dataset, source):
    """Weights read from a file must give a finite loss and finite gradients on the data's first
    window; weights that overflow would only fail after the run had written its log."""
    window = dataset.train[:dataset.block_size + 1].astype(np.int64)
    model.eval()  # no dropout: no random numbers drawn
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, loss = model(window[None, :-1], window[None, 1:])  # (1, T) inputs and targets
        loss.backward()
    finite = math.isfinite(loss.item()) and nonfinite_weight(model, grads=True) is None
    model.zero_grad()
    model.train()
    if not finite:
        raise CheckpointError(f"{source}: the weights give a loss or gradients that are not finite (nan or "
                              f"inf) on the data: they overflow in {model.transformer.wte.weight.dtype}")
