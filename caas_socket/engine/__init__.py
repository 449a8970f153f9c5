"""Engine.IO sessions, independent of the transport that carries them."""

__all__ = ["session"]
