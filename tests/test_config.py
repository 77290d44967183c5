"""Config: schema, overrides, files, and errors that name the key, the value and what is valid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_command

from imgclf.config import Config, dump_config, load_config, parse_overrides
from imgclf.infra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_default_recipe():
    # configs/default.yaml documents the embedded default: it must say exactly the same.
    assert load_config(ROOT / "configs" / "default.yaml") == Config()
    assert load_config(None) == Config()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_every_shipped_config_is_valid_and_round_trips(path: Path, tmp_path: Path):
    config = load_config(path)
    dumped = tmp_path / "c.yaml"
    dumped.write_text(dump_config(config))
    assert load_config(dumped) == config


def test_overrides_parse_values_as_yaml():
    config = load_config(
        None, ["train.epochs=3", "model.dropout=0.25", "model.hidden=[64,32]", "augment.flip=none"]
    )
    assert config.train.epochs == 3
    assert config.model.dropout == 0.25
    assert config.model.hidden == (64, 32)
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


def test_config_is_frozen():
    config = Config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError
        config.train.epochs = 3  # type: ignore[misc]


def test_typo_names_the_nearest_key():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.dropuot=0.3"])
    msg = str(err.value)
    assert "'model.dropuot'" in msg and "did you mean 'model.dropout'" in msg
    assert "\n" not in msg


def test_typo_in_a_file_section(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(path)


def test_wrong_type_names_key_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epochs=abc"])
    assert str(err.value).startswith("train.epochs: got 'abc'")
    assert "integer" in str(err.value)


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"train.epochs: got 0: .*greater than 0"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"model.dropout: got 1.5"):
        load_config(None, ["model.dropout=1.5"])


def test_invalid_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.optimizer=adamax"])
    assert "'adamax'" in str(err.value) and "'nesterov'" in str(err.value)
    with pytest.raises(
        ConfigError, match=r"unknown model 'vgg'; available: cnn, .*mlp, .*resnet50"
    ):
        load_config(None, ["model.name=vgg"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load_config(None, ["data.source=folder"])
    with pytest.raises(ConfigError, match="leave at least 10%"):
        load_config(None, ["data.val_fraction=0.5", "data.test_fraction=0.45"])


def test_malformed_overrides_and_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgclf.train", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback():
    result = _run_cli("model.dropuot=0.3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'model.dropout'" in lines[0]


def test_cli_print_config_prints_resolved_yaml_without_training(tmp_path: Path):
    result = _run_cli("--print-config", "train.epochs=3", "model.hidden=[64,32]")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "printed.yaml"
    out.write_text(result.stdout)
    config = load_config(out)
    assert config.train.epochs == 3 and config.model.hidden == (64, 32)


def test_cli_help_does_not_import_tensorflow():
    code = (
        "import sys; from imgclf.train import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "from imgclf.predict.cli import build_parser as _p\n"
        "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "usage: imgclf-train" in result.stdout
    assert "TF_NOT_LOADED" in result.stdout


def test_augment_overrides_switch_every_transform():
    from imgclf.config import augment_overrides

    base = load_config(None)
    assert base.augment.enabled and augment_overrides(True, base) == []
    off = load_config(None, augment_overrides(False, base))
    assert not off.augment.enabled
    on = load_config(None, [*augment_overrides(False, base), *augment_overrides(True, off)])
    assert on.augment == base.augment  # back on: the built-in default transforms


def test_overrides_may_come_before_or_after_options(capsys):
    from imgclf.train import main

    assert main(["train.epochs=2", "--print-config", "train.batch_size=8"]) == 0
    printed = capsys.readouterr().out
    assert "epochs: 2" in printed and "batch_size: 8" in printed


COMMANDS = ["imgclf-train", "imgclf-predict", "imgclf-export", "imgclf-compare", "imgclf-augment",
            "imgclf-lab", "imgclf-app", "imgclf-audit", "imgclf-tune"]  # fmt: skip


def test_the_commands_are_the_installed_console_scripts():
    from importlib.metadata import entry_points

    installed = {
        e.name for e in entry_points(group="console_scripts") if e.value.startswith("imgclf")
    }
    assert installed == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_a_usage_mistake_in_one_line(command: str, capsys):
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="console_scripts", name=command)
    main = entry.load()
    with pytest.raises(SystemExit) as exit_:
        main(["--no-such-option", "x"])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()  # argparse's own error prints the usage block first
    assert line.startswith("error: ") and line.endswith(" --help)") and "(see imgclf-" in line
    assert not out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "is empty"),
        (b"train:\n  epochs: 3\n  epochs: 4\n", "duplicate key 'epochs'"),
        (b"name: caf\xe9\n", "is not UTF-8 text"),
        (b"train:\n  ? [epochs]\n  : 3\n", "a key must be a plain name"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path: Path, text: bytes, message: str):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    result = run_command("imgclf-train", "--config", path, "--print-config")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path):
    from imgclf.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  <<: {epochs: 2, learning_rate: 0.01}\n  epochs: 3\n")
    config = load_config(path)  # a merged key given again is an override, not a duplicate
    assert (config.train.epochs, config.train.learning_rate) == (3, 0.01)


BOMB = "".join(  # "billion laughs": nine levels of nine aliases, 9^9 values once expanded
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, x in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "case",
    ["alias bomb", "long value", "deep value", "deep file", "big file", "alias bomb file"],
)
def test_hostile_configs_get_one_short_line_at_once(case: str, tmp_path: Path):
    """Each used to hang, grow without bound or end in a traceback (RecursionError); now one
    line, at most bounded.MAX_MESSAGE characters, exit 2, before anything is built."""
    from imgclf.infra import bounded

    config = tmp_path / "c.yaml"
    args, want = {
        "alias bomb": (["name=" + "{" + BOMB.replace("\n", ", ") + "}"], "aliases expand"),
        "long value": (["name=" + "x" * 10_000], "name"),
        "deep value": (["model.hidden=" + "[" * 50_000 + "]" * 50_000], "levels deep"),
        "deep file": (["--config", config], "levels deep"),
        "big file": (["--config", config], "bytes, more than"),
        "alias bomb file": (["--config", config], "aliases expand"),
    }[case]
    if case == "deep file":
        config.write_text("model:\n  hidden: " + "[" * 50_000 + "]" * 50_000 + "\n")
    elif case == "big file":
        config.write_text("# padding\n" * 200_000 + "train: {epochs: 1}\n")
    elif case == "alias bomb file":
        config.write_text(BOMB)
    done = run_command("imgclf-train", *args, "--print-config")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and want in line, line
    assert len(line) <= len("error: ") + bounded.MAX_MESSAGE + 40, len(line)


def test_yaml_merge_keys_and_small_aliases_still_load(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "train: &base {epochs: 2, batch_size: 8}\nmodel: {hidden: &h [16, 8]}\n"
        "augment: {flip: none}\n"
    )
    config = load_config(path)
    assert config.train.epochs == 2 and list(config.model.hidden) == [16, 8]
    mapping = parse_overrides(["model.hidden=[4, 4]"])
    assert mapping == {"model": {"hidden": [4, 4]}}


@pytest.mark.parametrize(
    "override, want",
    [
        ("train.epochs=1180591620717411303424", "less than or equal to 100000"),
        ("transfer.fine_tune_epochs=1000000", "less than or equal to 100000"),
        ("data.image_size=[100000,100000]", "less than or equal to 4096"),
        ("model.hidden=[1000000000]", "less than or equal to 65536"),
        ("model.filters=[8,100000]", "less than or equal to 65536"),
        ("data.classes=[no,yes]", 'quote them: ["no", "yes"]'),
    ],
)
def test_values_that_would_die_at_run_time_are_refused_naming_the_limit(override, want):
    """2^70 epochs, a 100,000-pixel side or a billion units passed validation and failed at run
    time (or allocated until killed); `no`/`yes` became booleans without a word."""
    with pytest.raises(ConfigError, match=re.escape(want)):
        load_config(None, [override])
    assert load_config(None, ['data.classes=["no", "yes"]']).data.classes == ("no", "yes")
