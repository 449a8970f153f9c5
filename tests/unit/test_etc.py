"""The deployment files of ``etc/`` are checked by the tools that will read them.

* the systemd units by ``systemd-analyze verify`` (and ``security``), on copies
  whose paths point at this checkout and at temporary files;
* the unit's command line by running it: socket-activated the way systemd
  does it (``systemd-socket-activate``), with the example env file and INI
  file, under the kernel's memory-deny-write-execute, until it serves, then
  SIGTERM, within ``TimeoutStopSec``;
* the example INI file against :data:`caas_socket.config.OPTIONS`: every
  option is there, with its true default, and every value parses;
* the load balancer examples by ``haproxy -c`` and ``nginx -t``;
* ``docs/DEPLOY.rst``, the guide to all of them, by docutils.

Every tool is required, none is optional: a missing one fails the test
(``systemd``, ``haproxy``, ``nginx`` from Debian's packages).
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docutils.core
import docutils.nodes
import pytest
import socketio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caas_socket.auth.build import mint_token
from caas_socket.config import OPTIONS, OPTIONS_BY_NAME, Config, duration
from caas_socket.observability.logs import LevelFilter
from caas_socket.tap import Options
from tests.support.nodes import ROOT, TWISTD, ServerProcess
from tests.support.redis_server import RedisServer, free_port

ETC = ROOT / "etc"
SYSTEMD = ETC / "systemd"
SERVICE = SYSTEMD / "caas-socket@.service"
INI = ETC / "caas-socket.ini.example"
ENV = ETC / "caas-socket.env.example"
LB = ETC / "loadbalancer"
DEPLOY = ROOT / "docs" / "DEPLOY.rst"
INSTALLED_TWISTD = "/opt/caas-socket/venv/bin/twistd"
CONF_DIR = "/etc/caas-socket/"
#: Read by the JSON log observer, not an option of OPTIONS.
LOG_LEVEL = "CAAS_LOG_LEVEL"
#: What a stop needs beyond the drain: release the lease (a few Redis calls,
#: each bounded by --redis-timeout) and stop the health listener.
STOP_MARGIN = 10.0


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install -y {name})", pytrace=False)
    return path


def directives(path: Path) -> dict[str, list[str]]:
    """``Key`` -> values of a unit file (sections merged: our keys are unique)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def environment_file(text: str) -> dict[str, str]:
    """The variables of a systemd ``EnvironmentFile=`` (the subset of its syntax we use)."""
    variables = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            variables[key.strip()] = value.strip().strip("\"'")
    return variables


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """A stand-in for /etc/caas-socket: the example INI and env files, a secret, key files."""
    conf = tmp_path / "etc-caas-socket"
    conf.mkdir()
    shutil.copy(INI, conf / "caas-socket.ini")
    shutil.copy(ENV, conf / "1.env")
    (conf / "common.env").write_text("")
    (conf / "jwt-secret").write_text("s" * 48 + "\n")
    (conf / "jwt-public.pem").write_text("")
    (conf / "jwks.json").write_text("{}")
    (conf / "api-keys").write_text("an-example-api-key-0123456789 acme\n")
    return conf


def localized(text: str, conf: Path) -> str:
    return text.replace(INSTALLED_TWISTD, str(TWISTD)).replace(CONF_DIR, f"{conf}/")


# -- systemd ---------------------------------------------------------------------------


@pytest.fixture
def units(tmp_path: Path, conf_dir: Path) -> Path:
    """Copies of etc/systemd whose paths resolve on this machine."""
    units = tmp_path / "units"
    shutil.copytree(SYSTEMD, units)
    for unit in [p for p in units.rglob("*") if p.is_file()]:
        unit.write_text(localized(unit.read_text(), conf_dir))
    return units


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a checking tool; the test reads its status and output."""
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=60)


def analyze(units: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run([tool("systemd-analyze"), *args], cwd=units)
    if "--man" in args and "unrecognized option" in done.stderr:
        return analyze(units, *(a for a in args if not a.startswith("--man")))
    return done


def complaints(done: subprocess.CompletedProcess[str]) -> list[str]:
    """Output lines about our units (a host may have its own units to complain about)."""
    return [line for line in (done.stdout + done.stderr).splitlines() if "caas-socket" in line]


def test_units_verify(units: Path) -> None:
    """A plain instance and a socket-activated one (its two drop-ins) load without a warning."""
    done = analyze(units, "verify", "--man=no", "caas-socket@1.service", "caas-socket@1.socket")
    assert (done.returncode, complaints(done)) == (0, []), done.stdout + done.stderr
    shutil.rmtree(units / "caas-socket@1.service.d")
    done = analyze(units, "verify", "--man=no", "caas-socket@1.service")
    assert (done.returncode, complaints(done)) == (0, []), done.stdout + done.stderr


def test_a_socket_without_its_port_drop_in_refuses_to_load(units: Path) -> None:
    done = analyze(units, "verify", "--man=no", "caas-socket@2.socket")
    assert done.returncode != 0
    assert "has no Listen setting" in done.stderr


def test_service_sandbox_exposure_is_low(units: Path) -> None:
    """``systemd-analyze security`` rates it at most 1.5 of 10 (1.1 when written)."""
    done = analyze(units, "security", "--offline=yes", "--threshold=15", "caas-socket@1.service")
    assert done.returncode == 0, done.stdout + done.stderr


def test_stop_waits_for_the_drain() -> None:
    unit = directives(SERVICE)
    drain = OPTIONS_BY_NAME["drain-period"].default
    assert duration(unit["TimeoutStopSec"][0]) >= drain + STOP_MARGIN
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["Restart"] == ["on-failure"]


def test_secrets_stay_off_the_command_line() -> None:
    unit = directives(SERVICE)
    (command,) = unit["ExecStart"]
    assert "--jwt-secret-file ${CREDENTIALS_DIRECTORY}/jwt-secret" in command
    assert "--jwt-secret " not in command
    assert unit["LoadCredential"] == ["jwt-secret:/etc/caas-socket/jwt-secret"]
    assert "CAAS_JWT_SECRET=" not in ENV.read_text()


def unit_command(conf: Path, credentials: Path, instance: str) -> list[str]:
    """The unit's ExecStart, with systemd's substitutions done for ``instance``."""
    (command,) = directives(SERVICE)["ExecStart"]
    command = localized(command, conf).replace("${CREDENTIALS_DIRECTORY}", str(credentials))
    return shlex.split(command.replace("%H", socket.gethostname()).replace("%i", instance))


#: Runs its arguments with PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN), inherited
#: across fork and exec: the kernel's own MemoryDenyWriteExecute=yes.
_MDWE = """
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("PR_SET_MDWE had no effect")
except PermissionError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture
def socket_activated(
    conf_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> Iterator[tuple[ServerProcess, int]]:
    """Instance 1 as its units start it (env files, credential, adopted socket); its health port."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(conf_dir / "jwt-secret", credentials / "jwt-secret")
    env = environment_file((conf_dir / "1.env").read_text())
    adopted = re.search(r"^#(CAAS_LISTEN=systemd:\S+)$", ENV.read_text(), re.M)
    assert adopted is not None, "the env example shows how to adopt a systemd socket"
    env |= environment_file(adopted[1])
    health = free_port()
    env["CAAS_HEALTH_LISTEN"] = f"tcp:{health}:interface=127.0.0.1"
    env["CAAS_REDIS"] = redis_server.url
    for assignment in directives(SERVICE)["Environment"]:
        env |= environment_file("\n".join(shlex.split(assignment)))
    port = free_port()
    activate = [tool("systemd-socket-activate"), f"--listen=127.0.0.1:{port}"]
    # systemd always names the sockets it passes (LISTEN_FDNAMES); Twisted insists.
    activate += ["--fdname=caas-socket@1.socket", *(f"--setenv={k}={v}" for k, v in env.items())]
    node = ServerProcess(
        [sys.executable, "-c", _MDWE, *activate, *unit_command(conf_dir, credentials, "1")],
        listening=r"Listening on (?P<host>[0-9.]+):(?P<port>\d+) as 3",
        name="caas-socket@1",
    )
    with node:
        yield node, health


def get(port: int, path: str) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def ready(port: int, timeout: float = 10.0) -> bool:
    """Whether /readyz says 200 within ``timeout`` (the bus subscribes after the start)."""
    deadline = time.monotonic() + timeout
    while get(port, "/readyz")[0] != 200:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_unit_command_line_serves_and_drains(
    socket_activated: tuple[ServerProcess, int], conf_dir: Path
) -> None:
    """ExecStart with the env and INI examples: a node that authenticates, then drains on time."""
    node, health = socket_activated
    assert node.port is not None
    # The first connection makes systemd-socket-activate start twistd.
    status, body = get(node.port, "/socket.io/?EIO=4&transport=polling")
    assert (status, body) == (400, {"code": 0, "message": "Transport unknown"})
    started = node.wait_for_log(r'"event": "node_started"', timeout=15)
    assert f"{socket.gethostname()}-1" in started.string
    assert ready(health)

    client = socketio.Client(reconnection=False)
    beats: list[object] = []
    gone = threading.Event()
    client.on("heartbeat", beats.append)
    client.on("disconnect", lambda *reason: gone.set())
    secret = (conf_dir / "jwt-secret").read_bytes().strip()
    client.connect(
        f"http://127.0.0.1:{node.port}",
        auth={"token": mint_token(secret, sub="alice", tenant_id="acme")},
        transports=["websocket"],
        wait_timeout=10,
    )
    try:
        client.emit("heartbeat")
        deadline = time.monotonic() + 10
        while not beats and time.monotonic() < deadline:
            time.sleep(0.02)
        assert beats, "no heartbeat answer"

        timeout_stop = duration(directives(SERVICE)["TimeoutStopSec"][0])
        node.terminate()
        # The drain closes the connection (its client would reconnect elsewhere) ...
        assert gone.wait(timeout_stop)
        # ... and twistd stops cleanly, then re-raises the signal that stopped it:
        # for systemd, death by SIGTERM is a clean exit (SuccessExitStatus=).
        assert node.wait(timeout_stop) == -signal.SIGTERM
    finally:
        client.disconnect()
    events = [json.loads(line) for line in node.lines if line.startswith("{")]
    assert all(event["level"] for event in events)
    drain = next(event for event in events if event.get("event") == "drain_started")
    assert drain["count"] == 1
    assert events[-1]["message"] == "Server Shut Down."
    assert any(event.get("event") == "node_stopped" for event in events)


# -- the INI and env examples -------------------------------------------------------------

_KEY = re.compile(r"^(;?)([a-z][a-z_-]*)\s*=\s*(.*)$", re.M)


def ini_entries() -> dict[str, tuple[bool, str]]:
    """Option name -> (commented out, value) of every key line of the INI example."""
    entries: dict[str, tuple[bool, str]] = {}
    for commented, key, value in _KEY.findall(INI.read_text()):
        name = key.replace("_", "-")
        assert name not in entries, f"{name} appears twice"
        entries[name] = (commented == ";", value)
    return entries


def build(args: list[str], environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Config:
    for name in [n for n in os.environ if n.startswith("CAAS_")]:
        monkeypatch.delenv(name)
    options = Options()
    options.parseOptions(args)
    return Config.from_options(options, environ=environ)


def test_the_ini_example_names_every_option() -> None:
    entries = ini_entries()
    in_file = {opt.name for opt in OPTIONS if opt.in_file}
    assert sorted(in_file - entries.keys()) == [], "missing from etc/caas-socket.ini.example"
    assert sorted(entries.keys() - in_file) == [], "not options (any more?)"
    for opt in OPTIONS:
        if not opt.in_file:
            assert f"--{opt.name} ({opt.env})" in INI.read_text()


def test_the_ini_example_shows_true_defaults() -> None:
    """An option with a default shows exactly it; the others show an example."""
    for name, (_, value) in ini_entries().items():
        opt = OPTIONS_BY_NAME[name]
        if opt.default is not None:
            assert opt.coerce(value) == opt.default, name


def test_the_ini_example_parses_as_the_unit_runs_it(
    conf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = unit_command(conf_dir, conf_dir, "1")
    config = build(args[args.index("caas-socket") + 1 :], {}, monkeypatch)
    assert (config.auth, config.jwt_secret) == ("jwt", b"s" * 48)
    assert config.server_id == f"{socket.gethostname()}-1"
    assert config.drain_period + STOP_MARGIN <= duration(directives(SERVICE)["TimeoutStopSec"][0])


def test_every_value_of_the_ini_example_parses(
    conf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommented, each example value is valid (and the examples fit together)."""
    ini = conf_dir / "caas-socket.ini"
    ini.write_text(localized(re.sub(r"^;(?=[a-z])", "", INI.read_text(), flags=re.M), conf_dir))
    config = build(["--config", str(ini)], {}, monkeypatch)
    assert config.redis == "redis://10.0.0.5:6379/0"
    assert config.jwt_jwks == f"{conf_dir}/jwks.json"
    assert config.token_refresh_event is not None


def test_the_env_example_sets_options(conf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment_file(ENV.read_text())
    known = {opt.env for opt in OPTIONS} | {LOG_LEVEL}
    assert sorted(env.keys() - known) == []
    assert {"CAAS_LISTEN", "CAAS_HEALTH_LISTEN", "CAAS_REDIS"} <= env.keys()
    LevelFilter(env[LOG_LEVEL])
    args = ["--config", str(conf_dir / "caas-socket.ini"), "--jwt-secret-file"]
    config = build([*args, str(conf_dir / "jwt-secret")], env, monkeypatch)
    assert config.listen == (env["CAAS_LISTEN"],)
    assert config.health_listen == (env["CAAS_HEALTH_LISTEN"],)


# -- load balancers ---------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    """A throw-away certificate: ``cert``, ``key`` and both in one ``pem`` (HAProxy's way)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rt.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    serial, tomorrow = x509.random_serial_number(), now + datetime.timedelta(days=1)
    builder = x509.CertificateBuilder(name, name, key.public_key(), serial, now, tomorrow)
    cert = builder.sign(key, hashes.SHA256())
    paths = {part: tmp_path / f"{part}.pem" for part in ("cert", "key", "pem")}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["pem"].write_bytes(paths["cert"].read_bytes() + paths["key"].read_bytes())
    return paths


def ping_cycle() -> float:
    return OPTIONS_BY_NAME["ping-interval"].default + OPTIONS_BY_NAME["ping-timeout"].default


def test_haproxy_config_is_valid(tmp_path: Path, tls: dict[str, Path]) -> None:
    text = (LB / "haproxy.cfg.example").read_text()
    config = tmp_path / "haproxy.cfg"
    config.write_text(text.replace("/etc/haproxy/tls/rt.example.com.pem", str(tls["pem"])))
    done = run([tool("haproxy"), "-c", "-f", str(config)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr
    for timeout in ("client", "server", "tunnel"):
        match = re.search(rf"^\s*timeout {timeout} (\S+)$", text, re.M)
        assert match and duration(match[1]) > ping_cycle(), timeout
    assert "http-check send meth GET uri /readyz" in text


def test_nginx_config_is_valid(tmp_path: Path, tls: dict[str, Path]) -> None:
    text = (LB / "nginx.conf.example").read_text()
    site = tmp_path / "caas-socket.conf"
    site.write_text(
        text.replace("/etc/nginx/tls/rt.example.com.crt", str(tls["cert"])).replace(
            "/etc/nginx/tls/rt.example.com.key", str(tls["key"])
        )
    )
    # The example is an http{} snippet (conf.d/); wrap it in a whole configuration.
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {site};\n}}\n"
    )
    done = run([tool("nginx"), "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(main)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[warn]" not in done.stderr and "[emerg]" not in done.stderr
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"^\s*{directive} (\S+);$", text, re.M)
        assert match and duration(match[1]) > ping_cycle(), directive
    assert "location /socket.io/" in text


# -- the guide -----------------------------------------------------------------------------


def test_the_deploy_guide_is_valid_and_names_every_file() -> None:
    text = DEPLOY.read_text()
    tree = docutils.core.publish_doctree(
        text, settings_overrides={"report_level": 5, "halt_level": 5, "warning_stream": False}
    )
    problems = [m.astext() for m in tree.findall(docutils.nodes.system_message) if m["level"] >= 2]
    assert problems == []
    files = [path for path in ETC.rglob("*") if path.is_file()]
    assert len(files) >= 8
    assert [path.name for path in files if path.name not in text] == []
