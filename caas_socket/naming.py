"""Unambiguous names built from untrusted ids.

Tenant, user and device ids come from tokens and clients.  Joined with ``:``
as they are, tenant ``a:b`` + user ``c`` and tenant ``a`` + user ``b:c`` would
share a name, and one tenant could reach another's users.  Each component is
therefore percent-encoded where it holds a separator or anything unusual;
ordinary ids stay readable (``user:acme:alice``).
"""

from __future__ import annotations

import re

__all__ = ["escape", "user_room"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._~@+=!$&'()*,;\-]")


def _quote(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match[0].encode("utf-8", "surrogatepass"))


def escape(component: str) -> str:
    """``component`` with ``:``, ``%``, braces, spaces and non-ASCII percent-encoded."""
    return _UNSAFE.sub(_quote, component)


def user_room(tenant_id: str, user_id: str) -> str:
    """The room holding every connection of one user of one tenant."""
    return f"user:{escape(tenant_id)}:{escape(user_id)}"
