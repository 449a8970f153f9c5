"""What our twisted.web sites share."""

from __future__ import annotations

from twisted.web.server import Request, Site

__all__ = ["QuietSite"]


class QuietSite(Site):
    """A ``Site`` with no access log and no "Starting factory" lines.

    A probe every few seconds per load balancer, or a request per API call,
    would otherwise fill the journal with lines that say nothing (the API logs
    each request itself, once, with what matters); Twisted's ``HTTPFactory``
    also runs a once-a-second timer for its access-log timestamps, not needed.
    """

    noisy = False

    def startFactory(self) -> None:
        pass

    def stopFactory(self) -> None:
        pass

    def log(self, request: Request) -> None:
        pass
