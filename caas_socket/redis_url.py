"""The ``--redis`` URL: three forms, parsed and checked once at start-up.

::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ca=/path/ca.pem]
    redis+sentinel://[[user]:password@]host1[:port1],host2[:port2]/service[/db]
        [?sentinel_password=...]

Any mistake is a ``ValueError`` naming ``--redis``; the password is never echoed.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import attrs

__all__ = ["RedisURL"]

_SCHEMES = {"redis": 6379, "rediss": 6379, "redis+sentinel": 26379}


@attrs.frozen
class RedisURL:
    """A parsed ``--redis`` value; build it with :meth:`parse`."""

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    service_name: str | None = None
    sentinel_password: str | None = attrs.field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return self.service_name is not None

    @classmethod
    def parse(cls, text: str) -> RedisURL:
        """Parse and validate; every mistake is a ``ValueError`` naming ``--redis``."""
        try:
            parts = urlsplit(text)
        except ValueError as e:  # unbalanced brackets
            raise _bad(text, str(e)) from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise _bad(text, "the scheme must be redis://, rediss:// or redis+sentinel://")
        if parts.fragment:
            raise _bad(text, "a fragment (#...) makes no sense here")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        username, password = _userinfo(userinfo)
        hosts = tuple(_host_port(h, _SCHEMES[scheme], text) for h in hostlist.split(","))
        path = [unquote(p) for p in parts.path.split("/")[1:]]
        if path and path[-1] == "":
            path.pop()  # a trailing slash
        query = _query(parts.query, text)
        ca = query.pop("ca", None)
        sentinel_password = query.pop("sentinel_password", None)
        if query:
            raise _bad(text, f"unknown query parameter(s): {', '.join(sorted(query))}")
        if ca is not None and scheme != "rediss":
            raise _bad(text, "?ca= is only meaningful with rediss://")
        if scheme == "redis+sentinel":
            if not path or not path[0]:
                raise _bad(text, "a Sentinel URL needs the service name: .../service_name[/db]")
            service, db = path[0], _db(path[1:], text)
        else:
            if sentinel_password is not None:
                raise _bad(text, "?sentinel_password= is only meaningful with redis+sentinel://")
            if len(hosts) != 1:
                raise _bad(text, "several hosts are only allowed with redis+sentinel://")
            service, db = None, _db(path, text)
        return cls(
            hosts=hosts,
            db=db,
            username=username,
            password=password,
            tls=scheme == "rediss",
            ca_file=ca,
            service_name=service,
            sentinel_password=sentinel_password,
        )

    def redacted(self) -> str:
        """The URL without secrets, for logs."""
        scheme = "redis+sentinel" if self.is_sentinel else "rediss" if self.tls else "redis"
        auth = "***@" if self.password is not None else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        service = f"/{self.service_name}" if self.is_sentinel else ""
        return f"{scheme}://{auth}{hosts}{service}/{self.db}"


def _bad(text: str, why: str) -> ValueError:
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:  # never echo a password
        text = f"{scheme}://***@{rest.rpartition('@')[2]}"
    return ValueError(f"--redis {text!r}: {why}")


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(item: str, default_port: int, text: str) -> tuple[str, int]:
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(text, f"bad IPv6 address {item!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _bad(text, "a host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(text, f"bad port {port_text!r}")
    return host, int(port_text)


def _db(path: list[str], text: str) -> int:
    if not path:
        return 0
    if len(path) > 1 or not path[0].isdigit():
        raise _bad(text, f"the database must be a number, got {'/'.join(path)!r}")
    return int(path[0])


def _query(query: str, text: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    out = {}
    for name, values in parsed.items():
        if len(values) != 1 or not values[0]:
            raise _bad(text, f"?{name}= needs exactly one non-empty value")
        out[name] = values[0]
    return out
