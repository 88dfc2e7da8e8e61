"""Which ``Host`` names the sidecar answers to: the defence against DNS rebinding.

A web page on any site can make the browser of whoever reads it send requests to
``http://some-name:9464/``; if the page's own name later resolves to 127.0.0.1 (DNS
rebinding), the browser treats the sidecar's answers as that page's own and lets its script
read them. The ``Host`` header still carries the page's name, so answering only to names we
know stops it, as Django's ``ALLOWED_HOSTS`` does. Allowed without a setting: ``localhost``,
any IP address that names this sidecar (a loopback address, the bound address, or any
address at all when bound to every interface: an address cannot be rebound, only a name),
and this machine's host name; ``allowed_hosts`` adds the names of a reverse proxy or a
scraper (``.example.com`` allows its subdomains too, ``*`` turns the check off).
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence

WILDCARD_BINDS = ("", "0.0.0.0", "::")
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def split_host(host: str) -> str:
    """The name or address of a ``Host`` value, without its port, lower case, without a
    final dot; '' when it is malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        return address if bracket and (not rest or re.fullmatch(r":[0-9]{1,5}", rest)) else ""
    name, colon, port = host.partition(":")
    if colon and not re.fullmatch(r"[0-9]{1,5}", port):
        return ""
    return name.removesuffix(".")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class AllowedHosts:
    """The rule above for a sidecar bound to ``bind`` (``HOST:PORT``) with extra ``names``."""

    def __init__(self, bind: str, names: Sequence[str] = (), hostname: str | None = None) -> None:
        bound = bind.rpartition(":")[0]
        self.any_address = bound.strip("[]") in WILDCARD_BINDS
        self.bound = "" if self.any_address else split_host(bound)
        self.everything = "*" in names
        machine = (socket.gethostname() if hostname is None else hostname).lower()
        self.addresses = {address for name in names if (address := _address(name.strip("[]"))) is not None}
        self.exact = {"localhost", machine, *(name.lower().removesuffix(".") for name in names
                                              if not name.startswith("."))}
        self.suffixes = tuple(name.lower().removesuffix(".") for name in names if name.startswith("."))

    def allows(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: the header is absent, as from an
        HTTP/1.0 client, never from a browser) may be answered."""
        if host is None or self.everything:
            return True
        name = split_host(host)
        if not name:
            return False
        address = _address(name)
        if address is not None:
            return (address.is_loopback or self.any_address or address == _address(self.bound)
                    or address in self.addresses)
        if not _NAME.fullmatch(name):
            return False
        return name in self.exact or name == self.bound or any(
            name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes)

