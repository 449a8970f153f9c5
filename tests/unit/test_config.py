"""The option layer: one table -> flags, CAAS_* env, INI file, --help, and a frozen Config."""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs
import pytest
from twisted.python.usage import UsageError

from caas_socket import config as cfg
from caas_socket.config import OPTIONS, Config, ConfigError, Opt
from caas_socket.tap import Options, usage_lists

SECRET = "s3cr3t-value-never-shown"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """postOptions reads os.environ; a CAAS_* var of the developer's shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("CAAS_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def build(*argv: str, env: dict[str, str] | None = None, mp: pytest.MonkeyPatch) -> Config:
    """Parse like twistd does (postOptions sees os.environ), then build like makeService."""
    for name, value in (env or {}).items():
        mp.setenv(name, value)
    return Config.from_options(parse(*argv), os.environ)


def ini(tmp_path: Path, body: str, name: str = "caas.ini") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


# -- coercion tables ------------------------------------------------------------------

VALID = [
    (cfg.duration, "25", 25.0),
    (cfg.duration, "25s", 25.0),
    (cfg.duration, " 500ms ", 0.5),
    (cfg.duration, "2m", 120.0),
    (cfg.duration, "1.5", 1.5),
    (cfg.duration, 3, 3.0),
    (cfg.leeway, "0", 0.0),
    (cfg.leeway, "10", 10.0),
    (cfg.positive_int, "5", 5),
    (cfg.positive_int, "1_000_000", 1_000_000),
    (cfg.positive_int, 7, 7),
    (cfg.choice("jwt", "none"), "none", "none"),
    (cfg.text, " tenantId ", "tenantId"),
    (cfg.endpoints, "tcp:0", ("tcp:0",)),
    (
        cfg.endpoints,
        "tcp:1  unix:/tmp/caas.sock\n tcp:2",
        ("tcp:1", "unix:/tmp/caas.sock", "tcp:2"),
    ),
    (cfg.endpoints, ("tcp:0",), ("tcp:0",)),
    (cfg.algorithms, "HS256", ("HS256",)),
    (cfg.algorithms, "hs512, RS256,ES256K,eddsa,HS512", ("HS512", "RS256", "ES256K", "EdDSA")),
    (cfg.names, "a, b", ("a", "b")),
    (cfg.secret, "abc", b"abc"),
    (cfg.secret, b"abc", b"abc"),
    (cfg.server_id, "node-1.example_A", "node-1.example_A"),
    (cfg.server_id, "x" * 64, "x" * 64),
    (cfg.boolean, "yes", True),
    (cfg.boolean, "0", False),
]

INVALID = [
    (cfg.duration, "abc"),
    (cfg.duration, "0"),
    (cfg.duration, "-5s"),
    (cfg.duration, "5 days"),
    (cfg.duration, ""),
    (cfg.duration, 0),
    (cfg.duration, float("inf")),
    (cfg.duration, True),
    (cfg.leeway, "-1"),
    (cfg.positive_int, "0"),
    (cfg.positive_int, "-3"),
    (cfg.positive_int, "1.5"),
    (cfg.positive_int, "many"),
    (cfg.positive_int, True),
    (cfg.choice("reject", "evict-oldest"), "evict"),
    (cfg.choice("jwt", "none"), "JWT"),
    (cfg.text, "  "),
    (cfg.endpoints, "tpc:8080"),
    (cfg.endpoints, "tcp:abc"),
    (cfg.endpoints, "tcp:80:bogus=1"),
    (cfg.endpoints, "tcp:0 tcp:"),
    (cfg.endpoints, ""),
    (cfg.algorithms, "none"),
    (cfg.algorithms, "HS256,NoNe"),
    (cfg.algorithms, "HS999"),
    (cfg.algorithms, ","),
    (cfg.names, " , "),
    (cfg.secret, ""),
    (cfg.readable_file, "/nonexistent/key.pem"),
    (cfg.server_id, ""),
    (cfg.server_id, "x" * 65),
    (cfg.server_id, "node 1"),
    (cfg.server_id, "node/1"),
    (cfg.boolean, "maybe"),
]


@pytest.mark.parametrize(("coerce", "raw", "expected"), VALID)
def test_coercers_accept(coerce, raw, expected) -> None:
    assert coerce(raw) == expected


@pytest.mark.parametrize(("coerce", "raw"), INVALID)
def test_coercers_reject(coerce, raw) -> None:
    with pytest.raises(ValueError, match=r"expected|refusing"):
        coerce(raw)


def test_algorithm_none_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="refusing algorithm 'none'"):
        cfg.algorithms("RS256,NONE")


def test_defaults_are_already_of_the_final_type() -> None:
    """A default must survive its own coercion unchanged: no stringly-typed defaults."""
    for opt in OPTIONS:
        if opt.default is not None:
            assert opt.coerce(opt.default) == opt.default, opt.name


def test_every_option_lands_in_a_config_field() -> None:
    """The 'one table line + one Config field' contract: nothing is silently dropped."""
    consumed_at_build = {"config", "jwt_secret_file"}
    options = {opt.attr for opt in OPTIONS} - consumed_at_build
    assert options == set(attrs.fields_dict(Config))


# -- precedence: flag > env > file > default -----------------------------------------

PRECEDENCE = [
    # option, (flag, env, file) values, expected (all three, env+file, file only, none)
    ("ping-interval", ("3s", "2", "1"), (3.0, 2.0, 1.0, 25.0)),
    ("max-devices", ("3", "2", "1"), (3, 2, 1, 5)),
    ("user-claim", ("c", "b", "a"), ("c", "b", "a", "sub")),
    ("jwt-audience", ("c", "b,x", "a"), (("c",), ("b", "x"), ("a",), None)),
]


@pytest.mark.parametrize(("name", "values", "expected"), PRECEDENCE)
def test_precedence(tmp_path, monkeypatch, name, values, expected) -> None:
    flag, env, file = values
    attr = name.replace("-", "_")
    env_name = "CAAS_" + attr.upper()
    path = ini(tmp_path, f"[caas-socket]\nauth = none\n{name} = {file}\n")
    monkeypatch.setenv(env_name, env)
    results = [build("--auth=none", f"--config={path}", f"--{name}={flag}", mp=monkeypatch)]
    results.append(build("--auth=none", f"--config={path}", mp=monkeypatch))
    monkeypatch.delenv(env_name)
    results.append(build("--auth=none", f"--config={path}", mp=monkeypatch))
    results.append(build("--auth=none", mp=monkeypatch))
    assert tuple(getattr(config, attr) for config in results) == expected


def test_flag_equal_to_default_still_beats_env(monkeypatch) -> None:
    """Typed defaults make '--max-devices 5' look like the default; `given` tells them apart."""
    config = build("--auth=none", "--max-devices=5", env={"CAAS_MAX_DEVICES": "9"}, mp=monkeypatch)
    assert config.max_devices == 5


def test_listen_flags_replace_env_and_file(tmp_path, monkeypatch) -> None:
    path = ini(tmp_path, "[caas-socket]\nlisten = tcp:1\n    tcp:2\n")
    assert build("--auth=none", f"--config={path}", mp=monkeypatch).listen == ("tcp:1", "tcp:2")
    env = {"CAAS_LISTEN": "tcp:3 tcp:4"}
    config = build("--auth=none", f"--config={path}", env=env, mp=monkeypatch)
    assert config.listen == ("tcp:3", "tcp:4")
    config = build("--auth=none", "--listen=tcp:5", "--listen", "tcp:6", mp=monkeypatch)
    assert config.listen == ("tcp:5", "tcp:6")
    assert build("--auth=none", "--listen=tcp:7", mp=monkeypatch).listen == ("tcp:7",)
    monkeypatch.delenv("CAAS_LISTEN")
    assert build("--auth=none", mp=monkeypatch).listen == ("tcp:8080:interface=127.0.0.1",)


def test_environ_argument_is_used(monkeypatch) -> None:
    """from_options reads the mapping it is given, so callers need not patch os.environ."""
    config = Config.from_options(parse("--auth=none"), {"CAAS_PING_TIMEOUT": "500ms"})
    assert config.ping_timeout == 0.5


def test_ini_accepts_dashes_and_underscores_and_caas_config(tmp_path, monkeypatch) -> None:
    path = ini(tmp_path, "[caas-socket]\nping_interval = 2m\nmax-payload = 42\nauth = none\n")
    config = build(env={"CAAS_CONFIG": path}, mp=monkeypatch)
    assert (config.ping_interval, config.max_payload, config.auth) == (120.0, 42, "none")


def test_config_flag_beats_caas_config(tmp_path, monkeypatch) -> None:
    flag_file = ini(tmp_path, "[caas-socket]\nauth = none\nmax-devices = 1\n", "a.ini")
    env_file = ini(tmp_path, "[caas-socket]\nauth = none\nmax-devices = 2\n", "b.ini")
    config = build(f"--config={flag_file}", env={"CAAS_CONFIG": env_file}, mp=monkeypatch)
    assert config.max_devices == 1


def test_unknown_env_vars_are_ignored_and_empty_ones_unset(monkeypatch) -> None:
    env = {"CAAS_NO_SUCH_THING": "x", "CAAS_PING_INTERVAL": ""}
    assert build("--auth=none", env=env, mp=monkeypatch).ping_interval == 25.0


# -- INI file errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[caas-socket]\nping-intervall = 5\n", "unknown key 'ping-intervall'"),
        ("[caas-socket]\nconfig = /etc/other.ini\n", "unknown key 'config'"),
        ("[caas-socket]\nping-interval = 5\nping_interval = 6\n", "set twice"),
        ("[other]\nauth = none\n", r"no \[caas-socket\] section"),
        ("auth = none\n", "cannot read"),
    ],
)
def test_bad_ini_file(tmp_path, monkeypatch, body, message) -> None:
    path = ini(tmp_path, body)
    with pytest.raises(UsageError, match=message) as caught:
        parse("--auth=none", f"--config={path}")
    assert str(caught.value).startswith("--config (from command line): ")


def test_missing_config_file(monkeypatch) -> None:
    monkeypatch.setenv("CAAS_CONFIG", "/nonexistent/caas.ini")
    with pytest.raises(UsageError, match=r"^--config \(from CAAS_CONFIG\): expected a readable"):
        parse("--auth=none")


# -- error messages name the option and the source ----------------------------------------


def test_error_from_env_names_option_and_variable(monkeypatch) -> None:
    monkeypatch.setenv("CAAS_PING_INTERVAL", "abc")
    with pytest.raises(ConfigError) as caught:
        parse("--auth=none")
    assert str(caught.value) == (
        "--ping-interval (from CAAS_PING_INTERVAL): "
        "expected a positive duration like 25, 25s or 500ms, got 'abc'"
    )


def test_error_from_flag_names_option() -> None:
    with pytest.raises(UsageError, match=r"^--max-devices \(from command line\): .*'0'"):
        parse("--auth=none", "--max-devices=0")


def test_error_from_file_names_option_and_file(tmp_path) -> None:
    path = ini(tmp_path, "[caas-socket]\nauth = none\nlisten = tcp:80 tpc:81\n")
    with pytest.raises(UsageError) as caught:
        parse(f"--config={path}")
    assert str(caught.value).startswith(f"--listen (from {path}): ")
    assert "'tpc:81'" in str(caught.value)


# -- secrets ---------------------------------------------------------------------------


def test_secret_is_bytes_and_never_in_repr(monkeypatch) -> None:
    config = build(env={"CAAS_JWT_SECRET": SECRET}, mp=monkeypatch)
    assert config.jwt_secret == SECRET.encode()
    assert config.auth == "jwt"
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in repr(parse(f"--jwt-secret={SECRET}"))


def test_secret_file_is_read_and_stripped(tmp_path, monkeypatch) -> None:
    path = ini(tmp_path, SECRET + "\n", "secret")
    assert build(f"--jwt-secret-file={path}", mp=monkeypatch).jwt_secret == SECRET.encode()


def test_empty_secret_file(tmp_path) -> None:
    path = ini(tmp_path, "\n", "secret")
    with pytest.raises(UsageError, match=r"--jwt-secret-file \(from command line\): .* is empty"):
        parse(f"--jwt-secret-file={path}")


def test_secret_and_secret_file_are_exclusive(tmp_path, monkeypatch) -> None:
    path = ini(tmp_path, "x", "secret")
    monkeypatch.setenv("CAAS_JWT_SECRET", SECRET)
    with pytest.raises(UsageError) as caught:
        parse(f"--jwt-secret-file={path}")
    message = str(caught.value)
    assert "--jwt-secret (from CAAS_JWT_SECRET) and --jwt-secret-file" in message
    assert SECRET not in message


# -- cross-field validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "--auth jwt needs a key: give --jwt-secret, --jwt-secret-file,"),
        (
            ("--jwt-algorithms=RS256", "--jwt-secret=k"),
            "RS256 needs --jwt-public-key or --jwt-jwks",
        ),
        (("--jwt-algorithms=HS256,ES256", "--jwt-jwks={key}"), "HS256 needs --jwt-secret or"),
    ],
)
def test_cross_field_errors(tmp_path, argv, message) -> None:
    key = ini(tmp_path, "-----BEGIN PUBLIC KEY-----\n", "key.pem")
    with pytest.raises(UsageError, match=re.escape(message)):
        parse(*(a.format(key=key) for a in argv))


def test_cross_field_valid_combinations(tmp_path, monkeypatch) -> None:
    key = ini(tmp_path, "-----BEGIN PUBLIC KEY-----\n", "key.pem")
    config = build("--jwt-algorithms=RS256,EdDSA", f"--jwt-public-key={key}", mp=monkeypatch)
    assert (config.jwt_algorithms, config.jwt_public_key) == (("RS256", "EdDSA"), key)
    config = build(
        "--jwt-algorithms=HS256,RS256", "--jwt-secret=k", f"--jwt-jwks={key}", mp=monkeypatch
    )
    assert config.jwt_jwks == key
    assert build("--auth=none", mp=monkeypatch).jwt_secret is None


# -- Config.default and the built Config ------------------------------------------------


def test_config_default() -> None:
    config = Config.default()
    assert config.auth == "none"
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)
    assert (config.ping_interval, config.ping_timeout, config.connect_timeout) == (25.0, 20.0, 45.0)
    assert (config.max_devices, config.device_limit_policy, config.max_payload) == (
        5,
        "reject",
        1_000_000,
    )
    assert (config.jwt_algorithms, config.jwt_leeway) == (("HS256",), 10.0)
    assert (config.user_claim, config.tenant_claim) == ("sub", "tenantId")
    assert re.fullmatch(rf"[A-Za-z0-9._-]{{1,64}}-{os.getpid()}", config.server_id)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.max_devices = 9  # type: ignore[misc]


def test_config_default_overrides_are_validated_like_flags() -> None:
    config = Config.default(jwt_secret=SECRET, ping_interval="500ms", listen=("tcp:0",))
    assert (config.auth, config.jwt_secret, config.ping_interval) == ("jwt", SECRET.encode(), 0.5)
    with pytest.raises(ConfigError, match=r"^--ping-interval \(from Config.default\): "):
        Config.default(ping_interval=0)
    with pytest.raises(ConfigError, match="--auth jwt needs a key"):
        Config.default(auth="jwt")
    with pytest.raises(TypeError, match="no_such_field"):
        Config.default(no_such_field=1)


def test_evolve_rechecks_cross_field_rules() -> None:
    with pytest.raises(ConfigError):
        attrs.evolve(Config.default(), auth="jwt")


# -- --help is generated from the table --------------------------------------------------


def test_help_documents_every_option_and_its_env_var() -> None:
    text = " ".join(Options().getUsage(width=2000).split())
    for opt in OPTIONS:
        assert f"--{opt.name}" + ("" if opt.flag else "=") in text
        assert f"[env: {opt.env}]" in text
    assert "[default: tcp:8080:interface=127.0.0.1]" in text
    assert "[default: 25]" in text
    assert "Prefer --jwt-secret-file or CAAS_JWT_SECRET: flags are visible in ps" in text
    assert "flag > environment > INI file > default" in " ".join(str(Options()).split())


def test_table_drives_flags_too() -> None:
    """A boolean Opt(flag=True) becomes an optFlags switch whose use is tracked like the rest."""
    dry_run = Opt("dry-run", cfg.boolean, False, "Check the configuration only.", flag=True)

    class WithFlag(Options):
        table = (*OPTIONS, dry_run)
        optParameters, optFlags = usage_lists(table)

    assert "[env: CAAS_DRY_RUN]" in WithFlag().getUsage(width=2000)
    unset = WithFlag()
    unset.parseOptions(["--auth=none"])
    assert unset["dry-run"] is False
    assert "dry-run" not in unset.given
    given = WithFlag()
    given.parseOptions(["--auth=none", "--dry-run"])
    assert given["dry-run"] is True
    assert "dry-run" in given.given
