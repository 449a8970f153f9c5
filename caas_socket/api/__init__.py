"""The internal HTTP API: how other services reach users, through any node.

JSON in and out, a bearer key per calling service (:class:`ApiKeys`, from
``--api-key-file``), described by ``openapi.json`` (served at
``/openapi.json``).  Commands become the versioned commands of
:mod:`caas_socket.app.commands`, published to every node; queries read the
shared registry.  :func:`build_api_site` gives the twisted.web factory for a
:class:`~caas_socket.listeners.Listener` labelled ``api``.
"""

from .errors import ApiError
from .keys import ApiKeys, ApiPrincipal
from .routes import ROUTES, Route
from .site import build_api_site, load_openapi

__all__ = [
    "ROUTES",
    "ApiError",
    "ApiKeys",
    "ApiPrincipal",
    "Route",
    "build_api_site",
    "load_openapi",
]
