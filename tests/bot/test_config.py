from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.config import Config, default_config_path, load_config, parse_config
from bot.errors import ConfigError


def test_shipped_toml_equals_code_defaults() -> None:
    # config/livebot.toml documents the defaults; it must say exactly what the code does.
    assert load_config() == Config()


def test_every_key_in_shipped_toml_is_commented() -> None:
    lines = default_config_path().read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if "=" in s and not s.startswith("#") and not s.startswith("["):
            prev = lines[i - 1].strip()
            assert prev.startswith("#"), f"key without a comment: {s!r}"


def test_partial_file_takes_defaults(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[classifier]\nname = "snownlp"\n', encoding="utf-8")
    cfg = load_config(p)
    assert cfg.classifier.name == "snownlp"
    assert cfg.pipeline == Config().pipeline
    assert cfg.rooms[0].sources[0].kind == "simulator"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[pipeline]\nqueue_sise = 10\n", "pipeline.queue_sise"),
        ("[pipeline]\nbatch_size = 0\n", "pipeline.batch_size"),
        ("[classifier]\nname = \"bert\"\n", "classifier.name"),
        ("[[rooms]]\nname = \"a\"\n[[rooms.sources]]\nkind = \"simulator\"\nrate = -1\n", "rooms[0].sources[0].rate"),
        ("[[rooms]]\nname = \"a\"\n[[rooms.sources]]\nkind = \"replay\"\n", "rooms[0].sources[0].path"),
        ("bogus = 1\n", "bogus"),
        ("[bus]\nurl = \"kafka://x:9092\"\n", "bus.url"),
        ("[bus]\nrole = \"boss\"\n", "bus.role"),
    ],
)
def test_bad_key_or_value_names_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")) as info:
        load_config(p)
    assert info.value.key == key
    assert str(p) in str(info.value)


def test_duplicate_room_names_rejected() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"rooms": [{"name": "a"}, {"name": "a"}]})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[pipeline\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_shipped_toml_parses_as_plain_toml() -> None:
    data = tomllib.loads(default_config_path().read_text(encoding="utf-8"))
    assert data["rooms"][0]["name"] == "demo"
