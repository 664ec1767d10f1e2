"""Commands: what ``python -m tinygrad_gpt`` runs.

- ``cli.py``: the command line (``--key=value`` flags, ``-h``, recipes) and the exit codes.
- ``recipe.py`` and ``recipes/*.toml``: configs read from TOML files.
- ``sample.py``: text from a checkpoint or a pretrained model.
- ``gradcheck.py``: the ``gradcheck`` command, every op against finite differences.
- ``viz.py`` and ``layout.py``: pictures of graphs, attention and training curves.

This room may import everything; nothing imports it but ``__main__``. Importing it does
nothing else.
"""
