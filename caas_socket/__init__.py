"""caas-socket: the real-time connection service of the chat-as-a-service platform.

Socket.IO v5 / Engine.IO v4 over WebSocket on Twisted and Autobahn, with JWT
authentication, a device registry (in memory or shared in Redis) and cross-node
delivery.  Run it with ``twistd -n caas-socket``; embed it through
:mod:`caas_socket.server`.
"""

__all__: list[str] = []
