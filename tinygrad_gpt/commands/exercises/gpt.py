"""Step 3 of grading: a tiny float64 GPT trained a few AdamW steps with the learner's rule in place.

``train_losses(plug)`` trains it in the "rules" mode with some implementations replaced
(``plug`` a dict for ``Mode.replacing``) or with a learner's backward loop (``plug`` a function
``backward(root)``); the project's own losses come from the plain "rules" mode.
"""
import functools

import numpy as np

from ... import functional as F, modes
from ...backend import manual_seed
from ...model import GPT, GPTConfig

STEPS = 3


def _model():
    manual_seed(7)
    model = GPT(GPTConfig(block_size=6, vocab_size=9, n_layer=1, n_head=2, n_embd=8, dropout=0.0))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


def train_losses(plug=None):
    """The losses of STEPS AdamW steps on one batch, with ``plug`` in place."""
    model = _model()
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 9, (2, 6)), rng.integers(0, 9, (2, 6))
    mode = modes.RULES.replacing(plug, name="rules") if isinstance(plug, dict) else modes.RULES
    losses = []
    with F.mode(mode):
        opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95))
        for _ in range(STEPS):
            _, loss = model(idx, targets)
            if callable(plug) and not isinstance(plug, dict):
                plug(loss)
            else:
                loss.backward()
            losses.append(loss.item())
            opt.step()
            opt.zero_grad()
    return losses


@functools.lru_cache(maxsize=1)
def reference_losses():
    return tuple(train_losses())
