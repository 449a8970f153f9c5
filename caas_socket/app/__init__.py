"""The CaaS behaviour, built only on the public :mod:`caas_socket.server` API.

JWT authentication and device registration are middlewares of the main
namespace; heartbeat and cross-device sync are ordinary event handlers.
"""

from .caas import CaasApp
from .delivery import LocalDelivery, UserDelivery
from .devices import Kicker, LocalKicker, RegisterDevice
from .identity import Authenticate, Identity

__all__ = [
    "Authenticate",
    "CaasApp",
    "Identity",
    "Kicker",
    "LocalDelivery",
    "LocalKicker",
    "RegisterDevice",
    "UserDelivery",
]
