"""Run: the training loop, and what keeps a long run honest.

- ``train.py``: the config, the loop and the step; open this first.
- ``lock.py``: one run per out_dir at a time.
- ``runlog.py``: the JSON-lines log of a run.
- ``stopping.py``: Ctrl-C and signals, turned into a clean stop that saves.
- ``distributed.py``: data-parallel training over MPI ranks.
- ``settings.py``: process-wide settings a run opts into (thread count, allocator tuning); it
  imports nothing from the package, and the fast layer reads its thread count.

This room may import everything below it (the engine, the GPT, ``text``, ``storage``); nothing
from ``commands``. Importing it changes no process-wide setting.
"""
