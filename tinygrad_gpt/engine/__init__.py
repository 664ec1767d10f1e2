"""Bookkeeping that ``Tensor`` relies on, kept out of tensor.py so that it reads as the engine:
in-place versions (``versions.py``) and index conversion and range checks (``indexing.py``).
These modules import only ``backend``; tensor.py imports them."""
