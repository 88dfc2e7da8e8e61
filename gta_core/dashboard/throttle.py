"""Sign-in attempts per client: a few wrong tokens are free, then each locks the client out
for longer.

The first `FREE` wrong tokens from one address cost nothing; each further one locks that
address out, for `FIRST` second after the first of them, doubling with each (1 s, 2 s, 4 s,
… up to `LONGEST`); while locked out its sign-ins are answered 429 without a look at the
token. The right token clears the address's count. Guessing a 16-character token this way
takes longer than any deployment lives; the price is that behind a reverse proxy, whose
address every client shares, one guesser locks everyone out for up to `LONGEST`
(docs/dashboard.md, "Security").
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

FREE = 5
FIRST = 1.0
LONGEST = 300.0
CLIENTS = 10_000  # addresses remembered; beyond, the one whose last wrong token is oldest is forgotten


class SignInThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address: (wrong tokens, locked until)

    def locked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            _, until = self._clients.get(client, (0, 0.0))
        return max(0.0, until - self._clock())

    def wrong(self, client: str) -> float:
        """Count a wrong token; the lockout it starts, in seconds (0: none yet)."""
        now = self._clock()
        with self._lock:
            count = self._clients.pop(client, (0, 0.0))[0] + 1
            lockout = min(LONGEST, FIRST * 2 ** min(count - FREE - 1, 30)) if count > FREE else 0.0
            self._clients[client] = (count, now + lockout)
            if len(self._clients) > CLIENTS:
                self._clients.popitem(last=False)
        return lockout

    def right(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)
