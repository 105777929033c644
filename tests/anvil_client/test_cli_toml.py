"""The settings file written by ``anvil init`` / ``anvil connect`` is valid TOML for any text."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anvil_client._settings_file import write_config
from anvil_client.errors import ConfigError

# Arbitrary text, with controls, DEL, quotes, backslashes and non-BMP characters made likely.
_tricky = st.sampled_from(
    ['"', "\\", "\x7f", "\x00", "\x1f", "\n", "\r", "\t", "\U0001f600", "'''", '"""']
)
# (UTF-8 text only: a lone surrogate cannot be written, see the last test.)
_text = st.lists(st.one_of(st.characters(codec="utf-8"), _tricky), min_size=1).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    store=_text,
    channel=_text,
    cache_dir=_text,
    trusted_keys=st.lists(_text, min_size=1, max_size=3),
)
def test_written_settings_round_trip_through_tomllib(
    store: str, channel: str, cache_dir: str, trusted_keys: list[str]
) -> None:
    written = {
        "store": store,
        "channel": channel,
        "cache_dir": cache_dir,
        "trusted_keys": trusted_keys,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anvil.toml"
        write_config(path, written)
        loaded = tomllib.loads(path.read_text(encoding="utf-8"))
    assert loaded == written


def test_del_character_is_escaped() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anvil.toml"
        write_config(path, {"channel": "a\x7fb"})
        text = path.read_text(encoding="utf-8")
    assert "\x7f" not in text
    assert tomllib.loads(text)["channel"] == "a\x7fb"


def test_a_lone_surrogate_is_refused_in_one_sentence() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anvil.toml"
        with pytest.raises(ConfigError, match=r"not valid Unicode text; anvil\.toml was not"):
            write_config(path, {"channel": "a\udcffb"})
        assert not path.exists()
