"""Control-plane URLs: which backend, and precise errors for malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.control import (
    ControlPlaneUnavailable,
    InvalidArgument,
    InvalidControlPlaneUrl,
    control_plane_url,
    open_control_plane,
)
from ployz.control.url import DEFAULT_URL, URL_ENV


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/ployz", "scheme must be"),
        ("sqlite://", "expected sqlite:///path"),
        ("nats://", "expected nats://host"),
        ("nats://h:4222/bucket", "expected nats://host"),
        ("nats://h:4222?replica=3", "unknown parameter 'replica'"),
        ("nats://h:4222?replicas=three", "bad replicas"),
        ("nats://h:4222?ca=not-a-certificate", "bad ca: not a CA certificate"),
        ("nats://h:4222?ca=!!", "bad ca: not a CA certificate"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidControlPlaneUrl, match=message):
        open_control_plane(url)


def test_url_comes_from_argument_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    assert control_plane_url() == DEFAULT_URL
    monkeypatch.setenv(URL_ENV, "nats://cp:4222")
    assert control_plane_url() == "nats://cp:4222"
    assert control_plane_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    with open_control_plane(f"sqlite://{tmp_path}/cp.db") as cp:
        assert cp.url == f"sqlite://{tmp_path}/cp.db"
    assert (tmp_path / "cp.db").exists()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cp.db").write_bytes(b"not a database, " * 100)
    with pytest.raises(ControlPlaneUnavailable, match="not a database"):
        open_control_plane(f"sqlite://{tmp_path}/cp.db")


def test_nats_bucket_prefix_must_be_a_bucket_name() -> None:
    with pytest.raises(InvalidArgument, match=r"bucket prefix 'a\.b'"):
        open_control_plane("nats://127.0.0.1:1?bucket_prefix=a.b")
