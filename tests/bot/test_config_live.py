"""Config of the live sources (bilibili, douyin, generic_ws, generic) and the [ingest] listener."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import (
    BilibiliSourceConfig,
    Config,
    DouyinSourceConfig,
    GenericSourceConfig,
    GenericWsSourceConfig,
    IngestConfig,
    load_config,
)
from bot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "live-rooms.toml"


def load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "live.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


def room(*sources: str, name: str = "r") -> str:
    body = "".join(f"  [[rooms.sources]]\n{s}\n" for s in sources)
    return f'[[rooms]]\nname = "{name}"\n{body}'


def test_example_file_loads_with_every_live_kind() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.ingest.enabled and cfg.ingest.port == 8766
    kinds = {type(s) for r in cfg.rooms for s in r.sources}
    assert kinds == {BilibiliSourceConfig, DouyinSourceConfig, GenericSourceConfig, GenericWsSourceConfig}
    merged = next(r for r in cfg.rooms if r.name == "brand-day")
    assert [s.kind for s in merged.sources] == ["bilibili", "douyin", "generic"]
    # Everything the example leaves out keeps the shipped defaults.
    assert cfg.pipeline == Config().pipeline and cfg.screen == Config().screen


def test_live_source_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[ingest]\nenabled = true\n" + room(
        'kind = "bilibili"\nroom_id = 21452505',
        'kind = "douyin"',
        'kind = "generic_ws"\nurl = "ws://127.0.0.1:9001/events"',
        'kind = "generic"\nmatch = ["Kuaishou:3x9demo", " taobao : shop42 "]',
    ))
    bili, douyin, gws, generic = cfg.rooms[0].sources
    assert bili == BilibiliSourceConfig(room_id=21452505)
    assert (bili.heartbeat_s, bili.auth_timeout_s, bili.receive_timeout_s) == (30.0, 5.0, 0.0)
    assert (bili.reconnect_base_s, bili.reconnect_max_s) == (1.0, 30.0)
    assert bili.api_base == "https://api.live.bilibili.com" and bili.ws_url == () and not bili.trust_env
    assert bili.cookie_file == "" and bili.cookie_env == ""
    assert isinstance(douyin, DouyinSourceConfig)
    assert douyin.url == "ws://127.0.0.1:8888/" and douyin.douyin_room == ""
    assert isinstance(gws, GenericWsSourceConfig) and gws.token == ""
    assert isinstance(generic, GenericSourceConfig)
    assert generic.match == ("kuaishou:3x9demo", "taobao:shop42")
    assert IngestConfig() == IngestConfig(
        enabled=False, host="127.0.0.1", port=8766, token="", allowed_origins=()
    )


def test_ws_url_is_one_string_or_a_list(tmp_path: Path) -> None:
    one = load(tmp_path, room('kind = "bilibili"\nroom_id = 1\nws_url = "ws://127.0.0.1:1/sub"'))
    assert one.rooms[0].sources[0].ws_url == ("ws://127.0.0.1:1/sub",)  # type: ignore[union-attr]
    many = load(tmp_path, room('kind = "bilibili"\nroom_id = 1\nws_url = ["wss://a/sub", "wss://b/sub"]'))
    assert many.rooms[0].sources[0].ws_url == ("wss://a/sub", "wss://b/sub")  # type: ignore[union-attr]
    none = load(tmp_path, room('kind = "bilibili"\nroom_id = 1\nws_url = ""'))
    assert none.rooms[0].sources[0].ws_url == ()  # type: ignore[union-attr]


def test_ingest_off_loopback_with_a_token(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[ingest]\nenabled = true\nhost = "0.0.0.0"\ntoken = "t0ken"\n'
                         'allowed_origins = ["chrome-extension://abc"]\n')
    assert cfg.ingest.token == "t0ken" and cfg.ingest.allowed_origins == ("chrome-extension://abc",)


BILI = 'kind = "bilibili"\nroom_id = 7\n'
INGEST = "[ingest]\nenabled = true\n"
GEN = 'kind = "generic"\n'


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (room('kind = "bilibili"'), "rooms[0].sources[0].room_id", "Field required"),
        (room('kind = "bilibili"\nroom_id = 0'), "rooms[0].sources[0].room_id", "greater than or equal to 1"),
        (room('kind = "bilibili"\nroom_id = "abc"'), "rooms[0].sources[0].room_id", "valid integer"),
        (room(BILI + 'cookie = "SESSDATA=x"'), "rooms[0].sources[0].cookie", "unknown key"),
        (room(BILI + 'cookie_file = "a"\ncookie_env = "B"'), "rooms[0].sources[0]", "not both"),
        (room(BILI + 'cookie_env = "not a name"'), "rooms[0].sources[0].cookie_env", "pattern"),
        (room(BILI + "heartbeat_s = 0"), "rooms[0].sources[0].heartbeat_s", "greater than or equal to 1"),
        (room(BILI + "auth_timeout_s = -1"), "rooms[0].sources[0].auth_timeout_s", "greater than 0"),
        (room(BILI + "receive_timeout_s = 10"), "rooms[0].sources[0]", "longer than heartbeat_s"),
        (room(BILI + "reconnect_base_s = 40\nreconnect_max_s = 30"), "rooms[0].sources[0]", "base_s <="),
        (room(BILI + "reconnect_max_s = 0"), "rooms[0].sources[0].reconnect_max_s", "greater than 0"),
        (room(BILI + 'api_base = "ftp://x"'), "rooms[0].sources[0].api_base", "pattern"),
        (room(BILI + 'ws_url = "https://x/sub"'), "rooms[0].sources[0].ws_url", "ws:// or wss://"),
        (room(BILI + 'trust_env = "maybe"'), "rooms[0].sources[0].trust_env", "boolean"),
        (room('kind = "douyin"\nurl = "http://127.0.0.1:8888/"'), "rooms[0].sources[0].url", "pattern"),
        (room('kind = "douyin"\nport = 8888'), "rooms[0].sources[0].port", "unknown key"),
        (room('kind = "generic_ws"'), "rooms[0].sources[0].url", "Field required"),
        (room('kind = "generic_ws"\nurl = "ws://x"\ntoken = 5'), "rooms[0].sources[0].token", "valid string"),
        (INGEST + room('kind = "generic"'), "rooms[0].sources[0].match", "Field required"),
        (INGEST + room('kind = "generic"\nmatch = []'), "rooms[0].sources[0].match", "at least 1"),
        (INGEST + room(GEN + 'match = ["kuaishou"]'), "rooms[0].sources[0].match", "platform:room"),
        (INGEST + room(GEN + 'match = ["a:b", "A:b"]'), "rooms[0].sources[0].match", "repeated: a:b"),
        (room('kind = "generic"\nmatch = ["a:b"]'), "rooms[0].sources[0].kind", "enabled = true"),
        (INGEST + room('kind = "generic"\nmatch = ["a:b"]', name="one")
         + room('kind = "generic"\nmatch = ["a:b"]', name="two"),
         "rooms[1].sources[0].match", "'a:b' is already claimed by room 'one'"),
        (room('kind = "youtube"'), "rooms[0].sources[0]", "kind"),
        ("[ingest]\nport = 70000\n", "ingest.port", "less than or equal to 65535"),
        ('[ingest]\nenabled = true\nhost = "0.0.0.0"\n', "ingest.token", "token is required"),
        ("[ingest]\nallowed_origins = \"*\"\n", "ingest.allowed_origins", "valid tuple"),
        ("[ingest]\nlisten = true\n", "ingest.listen", "unknown key"),
    ],
)
def test_bad_live_config_names_the_dotted_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, text)
    assert info.value.key == key
    assert str(info.value).startswith(f"{tmp_path / 'live.toml'}: {key}: ")
