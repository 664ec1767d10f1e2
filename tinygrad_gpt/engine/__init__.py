"""Bookkeeping that ``Tensor`` relies on, kept out of tensor.py so that it reads as the engine:
in-place versions (``versions.py``), index conversion and range checks (``indexing.py``), the op
methods (``methods.py``) and the ``xp`` of a Tensor (``namespace.py``). Built on tensor.py:
gradients of gradients (``higher.py``: ``grad``, ``backward(create_graph=True)``) and the helpers
on them (``autograd.py``, imported as ``tinygrad_gpt.autograd``)."""
