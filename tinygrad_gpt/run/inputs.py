"""What a run starts from: the text, its tokenizer, and the model's config and weights.

``--init_from=scratch`` trains a new tokenizer (characters, or a BPE) on the text and builds a new
GPT; ``resume`` reads ``out_dir``'s checkpoint; a folder name reads a Hugging Face GPT-2 folder and
its tokenizer. Everything is read and checked here before the run writes anything.
"""
import os

from ..errors import DataError
from ..model import GPTConfig
from ..storage.checkpoint import load_checkpoint
from ..storage.fileio import file_op
from ..storage.pretrained import crop_block_size, from_pretrained, load_hf_tokenizer
from ..text.bpe import BPETokenizer
from ..text.data import Dataset, load_text
from ..text.folder import open_folder
from ..tokenizer import CharTokenizer
from .resume import check_resumable


def read_inputs(cfg, ckpt_path):
    """(checkpoint or None, GPT-2 model or None, dataset, tokenizer, data name, model config)."""
    ckpt = pretrained = tokenizer = model_config = None
    if cfg.init_from == "resume":
        with file_op("reading", ckpt_path):
            ckpt = load_checkpoint(ckpt_path)
        tokenizer = check_resumable(ckpt)
        model_config = ckpt.config
        cfg.block_size = model_config.block_size  # the model's shape comes from the checkpoint
    elif cfg.init_from != "scratch":  # a GPT-2 folder: its weights and its own BPE tokenizer
        pretrained = from_pretrained(cfg.init_from, dtype=cfg.dtype, dropout=cfg.dropout)
        cfg.block_size = min(cfg.block_size, pretrained.config.block_size)
        model_config = crop_block_size(pretrained, cfg.block_size).config
        tokenizer = load_hf_tokenizer(cfg.init_from, vocab_size=model_config.vocab_size)
    source = ckpt_path if ckpt is not None else cfg.init_from if pretrained is not None else None
    dataset, tokenizer, data_name = load_data(cfg, tokenizer, source)
    if ckpt is None and pretrained is None:
        model_config = GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size,
                                 n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                 dropout=cfg.dropout, bias=cfg.bias)
    return ckpt, pretrained, dataset, tokenizer, data_name, model_config


def load_data(cfg, tokenizer=None, tokenizer_source=None):
    """(dataset, tokenizer, data name): the text encoded by ``tokenizer``, or by a new one; or a
    folder of shards, read through memory maps."""
    if cfg.data is not None and os.path.isdir(cfg.data):
        return open_folder(cfg.data, cfg.block_size, tokenizer, tokenizer_source, cfg.vocab_size)
    text, name = load_text(cfg.dataset, cfg.data)
    if tokenizer is None:
        tokenizer = (BPETokenizer.train(text, cfg.vocab_size) if cfg.tokenizer == "bpe"
                     else CharTokenizer.from_text(text))
    where = cfg.data if cfg.data is not None else name
    try:
        ids = tokenizer.encode_array(text)
    except ValueError as e:  # resuming on text with characters the checkpoint's tokenizer lacks
        raise DataError(f"{where}: {e} (the tokenizer of {tokenizer_source})" if tokenizer_source
                        else f"{where}: {e}") from None
    dataset = Dataset(ids, cfg.block_size)
    for split in Dataset.SPLITS:
        if len(dataset.split(split)) < cfg.block_size + 1:
            raise DataError(f"{where}: the {split} split has {len(dataset.split(split))} tokens, too few for "
                            f"block_size {cfg.block_size} (it needs at least {cfg.block_size + 1}); use a "
                            f"smaller block_size or more text")
    return dataset, tokenizer, name
