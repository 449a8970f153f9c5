"""twistd plugin: ``twistd -n caas-socket [options]``.

Kept tiny and lazy on purpose: twistd imports every plugin module to list them,
so nothing here may import the reactor or the service code.
"""

from twisted.application.service import ServiceMaker

caas_socket = ServiceMaker(
    "caas-socket",
    "caas_socket.tap",
    "Real-time connection service: Socket.IO v5 over WebSocket with JWT auth",
    "caas-socket",
)
