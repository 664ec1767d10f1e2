"""The random streams of a run, each derived from ``--seed`` and never shared.

The model's init and dropout draw from ``backend.rng()`` (seeded with the seed); the training
batches and the evaluation batches each get a stream of their own, so no two of them replay the
same numbers, and under MPI the ranks other than 0 draw dropout from streams of their own.
"""
import numpy as np

STREAMS = {"batches": 1, "eval": 2, "dropout": 3}


def stream(seed, purpose, *more):
    """A generator of its own for one purpose (``STREAMS``), derived from the seed.

        >>> float(stream(1337, "eval", 10).random()) == float(stream(1337, "eval", 10).random())
        True
    """
    return np.random.default_rng([seed, STREAMS[purpose], *more])


def dropout_seed(seed, rank, iteration):
    """The seed of rank ``rank``'s dropout stream from ``iteration`` on (ranks 1 and up)."""
    return [seed, STREAMS["dropout"], rank, iteration]
