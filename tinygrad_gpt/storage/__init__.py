"""Storage: what goes to disk and comes back.

- ``fileio.py``: atomic writes and one readable error for every failing file operation.
- ``serialization.py``: the safetensors format, written and read without pickle.
- ``checkpoint.py``: a training checkpoint (model, optimizer, RNG streams, config) and its checks.
- ``lock.py``: one writer per folder (a run's out_dir, a ``prepare`` folder): a kept ``flock`` file.
- ``pretrained.py``: the Hugging Face GPT-2 layout, read (``from_pretrained``) and written (``export``).

This room may import the engine and the GPT (``model``, ``optim``, ``tokenizer``) and ``text``;
nothing from ``run`` or ``commands``. Importing it does nothing else.
"""
