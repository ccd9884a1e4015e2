"""ployzd's overlay flags: off by default, and each missing or bad piece named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ployz.agent.daemon import (
    DEFAULT_WIREGUARD_PORT,
    OverlayConfig,
    add_arguments,
    config_from_args,
)
from ployz.net.keys import generate_private_key, write_private_key
from ployz.transfer.keys import generate_private_key as generate_signing_key
from ployz.transfer.keys import public_key_text


@pytest.fixture
def base(tmp_path: Path) -> list[str]:
    trusted = public_key_text(generate_signing_key(tmp_path / "operator.key").public_key())
    return ["--machine-id", "machine-a", "--listen", "10.212.0.1:7070", "--trust", trusted,
            "--state-dir", str(tmp_path / "state")]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "wg.key"
    write_private_key(path, generate_private_key())
    return path


def parse(argv: list[str]) -> OverlayConfig | None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv)).overlay


def test_without_wireguard_there_is_no_overlay(base: list[str]):
    assert parse(base) is None


def test_overlay_flags_make_the_overlay_config(base: list[str], key_file: Path):
    overlay = parse([*base, "--control", "sqlite:///tmp/c.db", "--wireguard", "wg0",
                     "--wireguard-key", str(key_file), "--overlay", "10.212.0.1/16"])
    assert overlay == OverlayConfig("wg0", key_file.read_text().strip(), DEFAULT_WIREGUARD_PORT,
                                    "10.212.0.1/16")
    assert key_file.read_text().strip() not in repr(overlay)


@pytest.mark.parametrize(("extra", "message"), [
    (["--overlay", "10.212.0.1/16"], "--overlay needs --wireguard"),
    (["--wireguard", "wg0", "--overlay", "10.212.0.1/16", "--control", "sqlite:///c.db"],
     "--wireguard needs --wireguard-key"),
    (["--wireguard", "wg0", "--wireguard-key", "KEY", "--overlay", "10.212.0.1/16"],
     "--wireguard needs --control or --control-file"),
    (["--wireguard", "wg0", "--wireguard-key", "KEY", "--control", "sqlite:///c.db"],
     "--wireguard needs --overlay"),
    (["--wireguard", "a-much-too-long-name", "--wireguard-key", "KEY", "--overlay",
      "10.212.0.1/16", "--control", "sqlite:///c.db"], "--wireguard: .* is not an interface"),
    (["--wireguard", "wg0", "--wireguard-key", "KEY", "--overlay", "10.212.0.1",
      "--control", "sqlite:///c.db"], "--overlay: .* has no prefix"),
    (["--wireguard", "wg0", "--wireguard-key", "KEY", "--overlay", "10.212.0.1/40",
      "--control", "sqlite:///c.db"], "--overlay: "),
    (["--wireguard", "wg0", "--wireguard-key", "KEY", "--overlay", "10.212.0.1/16",
      "--control", "sqlite:///c.db", "--wireguard-port", "0"], "--wireguard-port must be"),
    (["--wireguard", "wg0", "--wireguard-key", "/nonexistent/wg.key", "--overlay",
      "10.212.0.1/16", "--control", "sqlite:///c.db"], "--wireguard-key: cannot read"),
])
def test_each_missing_or_bad_piece_is_named(base: list[str], key_file: Path, extra: list[str],
                                            message: str):
    argv = [str(key_file) if arg == "KEY" else arg for arg in extra]
    with pytest.raises(ValueError, match=message):
        parse([*base, *argv])


def test_the_control_url_can_come_from_a_file(base: list[str], tmp_path: Path):
    url = "nats://ployz:secret@10.0.0.1:4222"
    path = tmp_path / "control.url"
    path.write_text(url + "\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(
        [*base, "--control-file", str(path)])).control_url == url


@pytest.mark.parametrize(("content", "message"), [
    (None, "--control-file: cannot read .*control.url"),
    ("", "--control-file: .*control.url must hold one control-plane URL"),
    ("nats://a:4222\nnats://b:4222\n", "must hold one control-plane URL"),
])
def test_an_unreadable_or_empty_control_file_is_named(base: list[str], tmp_path: Path,
                                                     content: str | None, message: str):
    path = tmp_path / "control.url"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        parse([*base, "--control-file", str(path)])
