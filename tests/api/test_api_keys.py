"""API keys: the key file, constant-time checks, tenant scopes, and errors that never leak keys."""

from __future__ import annotations

import hmac
from pathlib import Path

import attrs
import pytest
from twisted.logger import capturedLogs

from caas_socket.api import ApiError, ApiKeys, ApiPrincipal
from caas_socket.api.keys import check_key_file
from caas_socket.config import ConfigError

KEY_A = "aaaaaaaaaaaaaaaa-0001"
KEY_B = "bbbbbbbbbbbbbbbb-0002"
KEY_C = "cccccccccccccccc-0003"


def keys() -> ApiKeys:
    return ApiKeys.parse(
        f"""
# service keys
{KEY_A}
   {KEY_B}   acme,globex   # two tenants
{KEY_C} *
"""
    )


def test_a_key_without_tenants_or_with_a_star_acts_for_every_tenant() -> None:
    k = keys()
    assert len(k) == 3
    assert k.check(f"Bearer {KEY_A}", "anyone") == ApiPrincipal("line 3", None)
    assert k.check(f"Bearer {KEY_C}".encode(), "anyone") == ApiPrincipal("line 5", None)


def test_a_scoped_key_acts_for_its_tenants_only() -> None:
    k = keys()
    assert isinstance(k.check(f"Bearer {KEY_B}", "acme"), ApiPrincipal)
    assert isinstance(k.check(f"bearer   {KEY_B}", "globex"), ApiPrincipal)
    refused = k.check(f"Bearer {KEY_B}", "initech")
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.code) == (403, "forbidden")
    # Routes without a tenant accept any valid key.
    assert isinstance(k.check(f"Bearer {KEY_B}", None), ApiPrincipal)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {KEY_A}",
        KEY_A,
        f"Bearer {KEY_A}x",
        "Bearer " + "x" * 2000,
    ],
)
def test_missing_or_wrong_keys_are_unauthorized(header: str | None) -> None:
    refused = keys().check(header, "acme")
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.code) == (401, "unauthorized")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_key_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    k = keys()
    assert isinstance(k.check(f"Bearer {KEY_A}", "acme"), ApiPrincipal)  # the first key
    assert len(compared) == 3
    assert isinstance(k.check("Bearer nope-nope-nope-nope", "acme"), ApiError)
    assert len(compared) == 6


def test_keys_are_not_kept_nor_shown() -> None:
    k = keys()
    assert KEY_A not in repr(k) and KEY_A not in repr(k._keys)
    kept = [attrs.astuple(key) for key in k._keys]
    assert not any(KEY_A.encode() in repr(kept).encode() for key in k._keys)
    assert all(len(key.digest) == 32 for key in k._keys)  # digests only


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n\n", "holds no key"),
        ("short", "line 1: a key is 16 to 512"),
        (f"{KEY_A} acme, globex", "line 1: expected a key and optionally tenants"),
        (f"{KEY_A} acme,,globex", "line 1: tenants are non-empty names"),
        (f"{KEY_A} *,acme", "line 1: tenants are non-empty names"),
        (f"{KEY_A}\n{KEY_B}\n{KEY_A} acme", "line 3 repeats the key of line 1"),
        ("ключ-ключ-ключ-ключ-ключ", "line 1: a key is 16 to 512"),
    ],
)
def test_malformed_files_name_the_option_and_line_but_not_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ApiKeys.parse(text, "keys.txt")
    assert str(raised.value).startswith("--api-key-file: ")
    assert message in str(raised.value)
    assert KEY_A not in str(raised.value) and "short" not in str(raised.value)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"\ufeff{KEY_A}\r\n{KEY_B} acme\r\n")
    path.chmod(0o600)
    with capturedLogs() as events:
        loaded = ApiKeys.from_file(str(path))
    assert events == []
    assert isinstance(loaded.check(f"Bearer {KEY_A}", "x"), ApiPrincipal)
    assert isinstance(loaded.check(f"Bearer {KEY_B}", "x"), ApiError)


def test_a_file_others_can_read_loads_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEY_A)
    path.chmod(0o644)
    with capturedLogs() as events:
        ApiKeys.from_file(str(path))
    assert [e["event"] for e in events] == ["api_keys_exposed"]
    assert KEY_A not in repr(events)


@pytest.mark.parametrize("content", [None, b"", b"\xff\xfe not utf-8"])
def test_unreadable_or_empty_files_are_usage_errors(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"^--api-key-file: "):
        ApiKeys.from_file(str(path))


def test_the_option_coercer_checks_the_file_and_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY_A} acme\n")
    path.chmod(0o644)
    with capturedLogs() as events:
        assert check_key_file(str(path)) == str(path)
    assert events == []  # the permission warning is for the service, once
    path.write_text("short\n")
    with pytest.raises(ValueError, match=r"^\S+ line 1: a key is 16 to 512") as raised:
        check_key_file(str(path))
    assert not isinstance(raised.value, ConfigError)
    with pytest.raises(ValueError, match=r"^cannot read "):
        check_key_file(str(tmp_path / "missing"))
