"""Text: turning characters into token ids and back, and the data a run trains on.

- ``bpe.py``: byte-level BPE as GPT-2 does it (training, encoding, the GPT-2 files).
- ``data.py``: reading and fetching text, the train/val split, and batches of token ids.
- ``shards.py``: llm.c's token shards (uint16 or uint32 behind a 256-int32 header), memory-mapped.
- ``folder.py``: a prepared folder, llm.c's or nanoGPT's, checked; ``load_tokenizer``.
- ``stream.py``, ``workers.py``, ``prepare.py``: the ``prepare`` command, streaming text through
  worker processes into shards in bounded memory.

The character tokenizer that a reader meets first lives at the top (``tinygrad_gpt/tokenizer.py``).
This room may import the engine's ``backend`` and ``errors`` and ``storage.fileio``; nothing from
``run`` or ``commands``. Importing it does nothing else.
"""
