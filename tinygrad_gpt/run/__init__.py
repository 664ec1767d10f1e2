"""Run: the training loop, and what keeps a long run honest.

- ``train.py``: the config, the loop and the step; open this first.
- ``config.py``: the checks of every flag of a training config.
- ``inputs.py``: the text, the tokenizer and the model a run starts from (scratch, GPT-2, resume).
- ``resume.py``: what a checkpoint must hold to resume, and putting it back exactly.
- ``outdir.py``: the out_dir, checked (a new run never replaces a checkpoint unasked), made,
  locked, and cleaned up after a run that saved nothing.
- ``finite.py``: NaN and infinity in losses, gradients and weights.
- ``progress.py``, ``streams.py``: the progress bar; the run's random streams.
- ``runlog.py``: the JSON-lines log of a run.
- ``stopping.py``: SIGTERM and Ctrl-C, turned into a clean stop that saves.
- ``distributed.py``, ``ranks.py``: data-parallel training over MPI ranks, and what they share.
- ``telemetry.py``: the measured peak, tokens per second and MFU, each parameter's health.
- ``settings.py``: process-wide settings a run opts into (thread count, allocator tuning); it
  imports nothing from the package, and the fast layer reads its thread count.

This room may import everything below it (the engine, the GPT, ``text``, ``storage``); nothing
from ``commands``. Importing it changes no process-wide setting.
"""
