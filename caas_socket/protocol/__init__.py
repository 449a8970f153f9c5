"""Pure Engine.IO v4 and Socket.IO v5 codecs.

Nothing here imports Twisted or Autobahn: text and bytes in, message objects
out, :class:`~.errors.DecodeError` for anything malformed.  That keeps the
decoders fuzzable on their own.
"""

__all__ = ["engineio", "errors", "socketio"]
