"""Hosts on one machine: network namespaces joined through a switch namespace by veth pairs, and a
cut of one host's link that drops its packets silently, as a partition or a dead switch does.

The layout, all in 198.18.N.0/24 (RFC 2544's benchmarking range; N chosen free per run)::

    test process (root namespace) -- db -- sw -- a
                                           sw -- b   ...one namespace per host

``db`` runs the database servers (listening on every address of that namespace, which are all
this module's), the hosts reach them through ``sw`` at `Network.db_address`, and the test
process directly at `Network.db_root_address`, so a cut never stalls the checks. Nothing
outside these namespaces is touched but the root end of the db link (a /30 of its own).

A cut is an nftables rule in ``sw``'s forward chain that drops every packet from and to the
host: both ends see silence (no reset, no ICMP, no local error), as with a real partition.
`Network.cut_after` arms the cut to land just after a given statement of that host reached
the server (a raw payload match), so the host is cut while its transaction is open.
The kernel here has no ``netem``, so ``nft`` (Debian ``nftables``) is the tool.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence

import pytest

TABLE = "gta_cut"
#: names of this module's namespaces: ``gp<pid>-<role>``, so a run can sweep what a killed run left
PREFIX = "gp"


def _run(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def require_tools() -> None:
    """Fail (never skip) when this machine cannot build the network: the partition test is
    part of the suite on every machine that runs the server backends."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the partition test needs {' and '.join(missing)} (Debian iproute2, nftables; "
                    "scripts/test installs them: scripts/prerequisites.txt)")
    if os.geteuid() != 0:
        pytest.fail("the partition test builds network namespaces and needs root (CI runs as root)")


def sweep_stale() -> None:
    """Delete the namespaces of earlier runs whose process is gone (a run killed mid-test)."""
    for line in _run("ip", "netns", "list", check=False).splitlines():
        match = re.match(rf"({PREFIX}(\d+)-\w+)", line)
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            _run("ip", "netns", "del", match.group(1), check=False)


def _free_subnet() -> int:
    """A third octet N such that 198.18.N.0/24 is on no interface and in no route here."""
    used = _run("ip", "-4", "addr") + _run("ip", "-4", "route")
    start = os.getpid() % 250
    for step in range(250):
        octet = (start + step) % 250 + 1
        if f"198.18.{octet}." not in used:
            return octet
    raise RuntimeError("no free 198.18.N.0/24 subnet for the partition test")


class Network:
    """The namespaces of one test module: `up` builds them, `down` removes them (idempotent)."""

    def __init__(self, hosts: Sequence[str] = ("a", "b")) -> None:
        self.hosts = list(hosts)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.octet = _free_subnet()
        self.root_link = f"{self.tag}r"  # the one interface in the root namespace
        self.built: list[str] = []

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def ip(self, last: int) -> str:
        return f"198.18.{self.octet}.{last}"

    @property
    def db_root_address(self) -> str:
        """Where the test process reaches the servers (no cut ever stands in between)."""
        return self.ip(2)

    @property
    def db_address(self) -> str:
        """Where the hosts reach the servers, through the switch."""
        return self.ip(6)

    def host_address(self, host: str) -> str:
        return self.ip(10 + 4 * self.hosts.index(host))

    def enter(self, role: str) -> list[str]:
        """The command prefix that runs a program inside ``role``'s namespace."""
        return ["ip", "netns", "exec", self.ns(role)]

    def _in(self, role: str, *args: str, stdin: str | None = None) -> str:
        return _run(*self.enter(role), *args, stdin=stdin)

    def up(self) -> None:
        sweep_stale()
        for role in ("db", "sw", *self.hosts):
            _run("ip", "netns", "add", self.ns(role))
            self.built.append(self.ns(role))
            self._in(role, "ip", "link", "set", "lo", "up")
        # the test process <-> db, a /30 of its own
        _run("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "root0", "netns", self.ns("db"))
        _run("ip", "addr", "add", f"{self.ip(1)}/30", "dev", self.root_link)
        _run("ip", "link", "set", self.root_link, "up")
        self._link("db", "sw0", self.ip(6), "sw", "db0", self.ip(5))
        self._in("db", "ip", "route", "add", f"{self.ip(0)}/24", "via", self.ip(5))
        self._in("db", "ip", "addr", "add", f"{self.ip(2)}/30", "dev", "root0")
        self._in("db", "ip", "link", "set", "root0", "up")
        for index, host in enumerate(self.hosts):
            self._link(host, "sw0", self.host_address(host), "sw", f"{host}0", self.ip(9 + 4 * index))
            self._in(host, "ip", "route", "add", self.db_address, "via", self.ip(9 + 4 * index))
        self._in("sw", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._in("sw", "nft", "-f", "-", stdin=f"""
            table inet {TABLE} {{
                set cut {{ type ipv4_addr; flags dynamic; }}
                chain forward {{
                    type filter hook forward priority 0; policy accept;
                    ip saddr @cut counter drop
                    ip daddr @cut counter drop
                    jump trigger
                }}
                chain trigger {{ }}
            }}""")

    def _link(self, left: str, left_name: str, left_ip: str, right: str, right_name: str, right_ip: str) -> None:
        _run("ip", "link", "add", left_name, "netns", self.ns(left), "type", "veth",
             "peer", "name", right_name, "netns", self.ns(right))
        for role, name, address in ((left, left_name, left_ip), (right, right_name, right_ip)):
            self._in(role, "ip", "addr", "add", f"{address}/30", "dev", name)
            self._in(role, "ip", "link", "set", name, "up")

    def down(self) -> None:
        """Remove every namespace (their veth pairs go with them); never raises."""
        for name in reversed(self.built):
            _run("ip", "netns", "del", name, check=False)
        self.built.clear()
        _run("ip", "link", "del", self.root_link, check=False)

    # -- the cut ------------------------------------------------------------------------------
    def cut(self, host: str) -> float:
        """Drop every packet from and to ``host`` from now on; when (time.time())."""
        self._in("sw", "nft", "add", "element", "inet", TABLE, "cut", f"{{ {self.host_address(host)} }}")
        return time.time()

    def cut_after(self, host: str, port: int, offset: int, patterns: Sequence[bytes]) -> None:
        """Cut ``host`` just after a packet of it to ``port`` carrying one of ``patterns`` (16
        bytes each) at byte ``offset`` of the TCP payload: that packet still gets through."""
        values = ", ".join("0x" + pattern.hex() for pattern in patterns)
        self._in("sw", "nft", "add", "rule", "inet", TABLE, "trigger", "ip", "saddr", self.host_address(host),
                 "tcp", "dport", str(port), f"@ih,{offset * 8},128", f"{{ {values} }}",
                 "update", "@cut", "{", "ip", "saddr", "}")

    def is_cut(self, host: str) -> bool:
        listing = json.loads(self._in("sw", "nft", "-j", "list", "set", "inet", TABLE, "cut"))
        return any(self.host_address(host) in json.dumps(item.get("set", {}).get("elem", []))
                   for item in listing["nftables"])

    def heal(self) -> float:
        """Disarm any trigger and let every host's packets through again; when (time.time())."""
        self._in("sw", "nft", "flush", "chain", "inet", TABLE, "trigger")
        self._in("sw", "nft", "flush", "set", "inet", TABLE, "cut")
        return time.time()

    def dropped(self) -> int:
        """Packets the cut dropped so far."""
        listing = self._in("sw", "nft", "list", "chain", "inet", TABLE, "forward")
        return sum(int(count) for count in re.findall(r"counter packets (\d+)", listing))

    def probe(self, host: str, port: int, timeout: float = 1.0) -> str:
        """Connect from ``host`` to the database address: ``connected``, ``timeout`` (silence)
        or the error a reset or an ICMP answer gives (``refused``, ``unreachable``...)."""
        script = ("import socket, sys\n"
                  "s = socket.socket(); s.settimeout(float(sys.argv[3]))\n"
                  "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
                  "except TimeoutError:\n    print('timeout')\n"
                  "except OSError as exc:\n    print(type(exc).__name__, exc)\n")
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._in(host, "python3", "-c", script, self.db_address, str(port), str(timeout)).strip()
        return "hung"
