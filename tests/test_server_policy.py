"""Who may reach `maskwatch serve`: the token and bind rule and the TLS pairing, now in the web
service (web/server.py), checked from Python and from the command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli, self_signed
from maskwatch.errors import SettingError
from maskwatch.web.server import LOOPBACK, Listener, server_token


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_needs_no_token(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASKWATCH_TOKEN", raising=False)
    assert server_token(host, None) is None


def test_network_address_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASKWATCH_TOKEN", raising=False)
    with pytest.raises(SettingError, match=r"--host 0\.0\.0\.0 opens the server to the network"):
        server_token("0.0.0.0", None)
    assert server_token("0.0.0.0", "t0k") == "t0k"
    assert server_token("0.0.0.0", None, no_auth=True) is None
    assert server_token("127.0.0.1", "t0k", no_auth=True) is None


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKWATCH_TOKEN", "from-env")
    assert server_token("0.0.0.0", None) == "from-env"
    assert server_token("0.0.0.0", "given") == "given"
    monkeypatch.setenv("MASKWATCH_TOKEN", "")
    with pytest.raises(SettingError):
        server_token("::", None)


def test_https_needs_cert_and_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with pytest.raises(SettingError, match="HTTPS needs both --cert and --key"):
        Listener(cert=cert)
    with pytest.raises(SettingError, match="HTTPS needs both --cert and --key"):
        Listener(key=key)
    assert Listener(cert=cert, key=key).scheme == "https"
    assert Listener().scheme == "http"


def test_a_certificate_and_key_the_server_cannot_use_are_one_line_before_it_starts(
    tmp_path: Path,
) -> None:
    """They were ssl's traceback, after the address had been announced."""
    cert, _ = self_signed(tmp_path)
    other_cert, other_key = self_signed(tmp_path, "other-")
    _, locked_key = self_signed(tmp_path, "locked-", "-passout", "pass:secret")
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8 not a certificate")
    for pair in ((junk, junk), (cert, other_key), (other_cert, locked_key), (cert, junk)):
        proc = run_cli("serve", "--port", "9", "--cert", str(pair[0]), "--key", str(pair[1]))
        assert_one_line_error(proc, f"cannot use --cert {pair[0]} with --key {pair[1]}: ")
        assert "open https" not in proc.stderr
    pipe = tmp_path / "key.fifo"
    os.mkfifo(pipe)  # ssl would wait for a writer
    proc = run_cli("serve", "--port", "9", "--cert", str(cert), "--key", str(pipe), timeout=60)
    assert_one_line_error(proc, f"cannot use --key {pipe}: not a regular file")


def test_cli_refuses_open_server_in_one_line(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    for args, text in (
        (
            ["serve", "--host", "0.0.0.0"],
            "maskwatch: error: --host 0.0.0.0 opens the server to the network: give --token "
            "TOKEN (or set MASKWATCH_TOKEN), or --no-auth to serve without one",
        ),
        (["serve", "--cert", str(cert)], "maskwatch: error: HTTPS needs both --cert and --key"),
    ):
        env = {k: v for k, v in os.environ.items() if k != "MASKWATCH_TOKEN"}
        proc = run_cli(*args, env=env)
        assert proc.returncode == 1
        assert proc.stderr.strip() == text


def test_the_address_printed_brackets_ipv6_and_encodes_the_token() -> None:
    from maskwatch.access import address

    assert address("http", "::1", 8000, token="a b&c=d") == "http://[::1]:8000/?token=a%20b%26c%3Dd"
    assert address("https", "127.0.0.1", 443, "/metrics") == "https://127.0.0.1:443/metrics"


@pytest.mark.parametrize("token", ["   ", " secret", "secret\t"])
def test_a_blank_or_space_padded_token_is_refused(token: str) -> None:
    with pytest.raises(SettingError, match="--token: a token must not be blank"):
        server_token("0.0.0.0", token)
