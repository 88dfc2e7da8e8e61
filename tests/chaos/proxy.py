"""A TCP proxy between the engine and a database server that can misbehave on demand.

Modes (`ChaosProxy.mode`):
- ``pass``: forward both ways.
- ``refuse``: stop listening, so new connections are refused; open ones go on.
- ``blackhole``: accept new connections and keep every socket open, but never forward a
  byte either way: each connection is half-open, it never answers. Leaving the blackhole
  resets the connections that lived through it, as a healed network resets a connection
  whose other end forgot it.
`drop_all` cuts every open connection at once (both sides see it end).

Threads and blocking stdlib sockets: one accept thread, two pump threads per connection.
"""
from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

from ..support.servers import free_port

Mode = Literal["pass", "refuse", "blackhole"]


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, waking any thread blocked on the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Link:
    """One client connection and, unless it was accepted into the blackhole, its upstream."""

    def __init__(self, client: socket.socket, server: socket.socket | None) -> None:
        self.client = client
        self.server = server
        self.tainted = server is None  # lived through a blackhole: reset when it ends

    def close(self) -> None:
        _reset(self.client)
        if self.server is not None:
            _reset(self.server)


class ChaosProxy:
    """Listens on 127.0.0.1:`port` and forwards to ``upstream`` according to `mode`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.accepted = 0
        self._mode: Mode = "pass"
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener: socket.socket | None = None
        self._listen()

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        with self._lock:
            previous, self._mode = self._mode, mode
            healed: list[_Link] = []
            if previous == "blackhole" and mode != "blackhole":
                healed = [link for link in self._links if link.tainted]
                self._links = [link for link in self._links if not link.tainted]
            if mode == "blackhole":
                for link in self._links:
                    link.tainted = True
        for link in healed:
            link.close()
        if mode == "refuse":
            self._unlisten()
        elif self._listener is None:
            self._listen()

    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    def drop_all(self) -> int:
        """Cut every open connection; how many there were."""
        with self._lock:
            doomed, self._links = self._links, []
        for link in doomed:
            link.close()
        return len(doomed)

    def close(self) -> None:
        self._unlisten()
        self.drop_all()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="chaos-proxy-accept", daemon=True).start()

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _reset(listener)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed (refuse mode, or the proxy closed)
            self.accepted += 1
            if self._mode == "blackhole":
                with self._lock:
                    self._links.append(_Link(client, None))
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)  # upstream down: the client sees its connection end at once
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(link, source, sink), name="chaos-proxy-pump",
                                 daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if link.tainted:
                    continue  # blackholed: swallow it; this link is reset when the blackhole ends
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            if link in self._links:
                self._links.remove(link)
        link.close()  # one side ended: end the other too
