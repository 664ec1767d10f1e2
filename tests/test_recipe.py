"""Recipe files: `python -m tinygrad_gpt train RECIPE [--key=value ...]`, a TOML file or a shipped name;
flags override it; unknown keys and wrong types are errors that name the file and the line."""
import configparser
import dataclasses
import os
from pathlib import Path

import pytest

from test_cli import assert_one_error_line, tinygrad_gpt, write_text
from tinygrad_gpt.commands import cli
from tinygrad_gpt.storage.checkpoint import load_checkpoint
from tinygrad_gpt.commands.cli import UsageError, parse_flags
from tinygrad_gpt.commands.recipe import RECIPE_DIR, shipped_recipes
from tinygrad_gpt.commands.sample import SampleConfig
from tinygrad_gpt.run.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_recipes_are_valid_training_setups(tmp_path):
    assert {"shakespeare_char_cpu", "shakespeare_char_gpu", "finetune_gpt2"} <= set(shipped_recipes())
    for name in shipped_recipes():
        cfg = parse_flags(TrainConfig, [name, f"--init_from={tmp_path}"])  # a folder for the fine-tune
        cfg.validate()
    gpu = parse_flags(TrainConfig, ["shakespeare_char_gpu"])
    assert (gpu.n_layer, gpu.n_head, gpu.n_embd, gpu.block_size, gpu.batch_size) == (6, 6, 384, 256, 64)
    assert gpu.dropout == 0.2 and gpu.device == "cuda" and gpu.lr_decay_iters == 5000
    assert parse_flags(TrainConfig, ["finetune_gpt2"]).init_from == "gpt2"


def test_the_recipes_ship_with_the_package():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["options.package_data"]["tinygrad_gpt"].strip() == "commands/recipes/*.toml"
    assert "tomli" in setup["options"]["install_requires"] and 'python_version < "3.11"' in \
        setup["options"]["install_requires"]
    assert os.path.dirname(RECIPE_DIR) == os.path.dirname(cli.__file__)


def test_flags_override_the_recipe_in_any_order(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('max_iters = 7\nlearning_rate = 3   # an integer for a float flag\nbias = false\n'
                      'lr_decay_iters = "None"\ndata = "x.txt"\n')
    cfg = parse_flags(TrainConfig, ["--max_iters=9", str(recipe), "--n_layer=2"])
    assert (cfg.max_iters, cfg.n_layer, cfg.bias, cfg.lr_decay_iters, cfg.data) == (9, 2, False, None, "x.txt")
    assert cfg.learning_rate == 3.0 and type(cfg.learning_rate) is float
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("max_iters", "n_layer", "bias", "learning_rate", "lr_decay_iters", "data"):
            assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name


@pytest.mark.parametrize("text, words", [
    ("max_iters = 5\n\n# a comment\nbatchsize = 4\n", ["line 4", "unknown key 'batchsize'", "did you mean batch_size"]),
    ("max_iters = 5\nmax_iters = 6\n", ["not a valid TOML recipe", "line 2"]),
    ("n_layer = 2.5\n", ["line 1", "n_layer takes an integer, got 2.5"]),
    ("bias = 1\n", ["line 1", "bias takes true or false"]),
    ("max_iters = \"None\"\n", ["line 1", "max_iters takes an integer"]),
    ("max_iters = \"10\"\n", ["line 1", "max_iters takes an integer, got the string '10'", "max_iters = 10"]),
    ("bias = \"false\"\n", ["line 1", "got the string 'false'", "bias = false"]),
    ("dropout = \"some\"\n", ["line 1", "dropout takes a number, got the string 'some'"]),
    ("max_iters = 5\nlr_decay_iters = None\n", ["line 2", "TOML has no None", "leave the key out",
                                                "lr_decay_iters = \"None\""]),
    ("dropout = null  # off\n", ["line 1", "TOML has no None"]),
    ("lr = 1e-3\n", ["line 1", "unknown key 'lr'", "did you mean learning_rate"]),
    ("data = 3\n", ["line 1", 'data takes a string or "None"']),
    ("n_layer = 2\n[model]\nn_head = 2\n", ["line 2", "[model] sections are not used"]),
    ('"out dir" = "x"\n', ["line 1", "unknown key 'out dir'"]),
    ("__import__('os') = 1\n", ["not a valid TOML recipe"]),
])
def test_bad_recipes_name_the_file_and_the_line(tmp_path, text, words):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    with pytest.raises(UsageError) as info:
        parse_flags(TrainConfig, [str(recipe)])
    message = str(info.value)
    assert message.startswith(str(recipe)) and len(message.splitlines()) == 1
    for word in words:
        assert word in message, message


def test_a_missing_recipe_and_two_recipes(tmp_path):
    with pytest.raises(UsageError, match="no such recipe file, and no shipped recipe .*shakespeare_char_cpu"):
        parse_flags(TrainConfig, ["shakespeare_char"])
    with pytest.raises(UsageError, match="one recipe at most"):
        parse_flags(TrainConfig, ["shakespeare_char_cpu", "finetune_gpt2"])
    with pytest.raises(UsageError, match="unknown key 'dataset'"):  # a training recipe is not a sampling one
        parse_flags(SampleConfig, ["shakespeare_char_cpu"])


def test_train_from_a_recipe_on_the_command_line(tmp_path):
    write_text(tmp_path / "input.txt")
    (tmp_path / "tiny.toml").write_text(
        'data = "input.txt"\nout_dir = "from-recipe"\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\n'
        'batch_size = 4\nmax_iters = 4\neval_interval = 2\neval_iters = 2\nsample_tokens = 0\n')
    result = tinygrad_gpt("train", "tiny.toml", "--max_iters=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "from-recipe").extra["iter"] == 3
    (tmp_path / "typo.toml").write_text("max_iter = 3\n")
    assert_one_error_line(tinygrad_gpt("train", "typo.toml", cwd=tmp_path), 2,
                          "typo.toml, line 1: unknown key 'max_iter' (did you mean max_iters?)")
