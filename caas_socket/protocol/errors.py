"""The one exception the codecs raise."""

__all__ = ["DecodeError"]


class DecodeError(ValueError):
    """Input that is not a valid packet.

    The connection that sent it is closed with the Socket.IO reason
    ``"parse error"``; the message says what was wrong, for the log.
    """
