"""A host cut off from the database by a silent partition, on PostgreSQL and MariaDB.

Two supervisors run on two "hosts" (network namespaces, `network.py`), each reaching a
private server through its own link, and drain a stream of tasks. Host ``a``'s link is cut
(every packet dropped, no reset) for several lease periods, three times: at a random moment;
just after a statement of ``a`` that leases or completes rows reached the server, so the
cut lands while ``a``'s statement or transaction is open (on MariaDB it then holds row
locks); and, with a limit on the queue, just after ``a``'s lease locked the limit row that
every lease needs. Each cut must show:

- every task ``a`` held or kept locked, and every task pending at the cut or a second later,
  is back in play (rescued, leased by ``b``, or final) within lease + rescue interval +
  grace of the cut: neither ``a``'s leases nor the locks of its open transaction freeze
  them, or ``b``, until the network returns;
- ``a`` runs and records a task submitted at the heal (to a queue only it serves) within
  `RESUME_BOUND`, with the workers it had (no restart);
- and at the end the harness's invariants: nothing lost, every accepted success the latest
  lease's (``a``'s stale writes fenced), duplicates only re-runs of what ``a`` ran while cut off.

The figures of each cut print in the chaos counters of pytest's summary.
"""
from __future__ import annotations

import dataclasses
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gta_core.db.connect import prepared_name
from gta_core.limits import limit_queue
from gta_core.store.rows import placeholders
from gta_core.store.sql.dialects import numbered
from gta_core.store.sql.statements import statements

from ..support.helpers import SupervisorProcess
from .harness import REPORTS, ChaosHarness, new_table
from .network import Network, require_tools
from .servers import PrivateServer, private_server, server_params

pytestmark = pytest.mark.chaos

LEASE = 5.0  # the statement timeout is 5 s too: MariaDB ends an idle transaction within it
SCAN = 0.5  # rescue every 0.5 s
CUT = 3 * LEASE
#: slack on a loaded 2-core machine, on top of lease + rescue interval
GRACE = 2.0
RESCUE_BOUND = LEASE + SCAN + GRACE
#: from the heal until the cut host has run and recorded a task: a reconnect's SYN is resent
#: within a second (the connect timeout is 2 s), then a lease within the scan interval
RESUME_BOUND = 1.0 + 1.0
LONG = CUT + 2  # a task that outlives the cut: its late success must be fenced
ONLY_A = "host-a"  # a queue only host a serves


@dataclasses.dataclass
class Cut:
    """What one cut of host ``a`` showed (seconds from the cut, or from the heal)."""

    how: str
    held: int = 0  # leases of ``a`` at the cut
    waiting: int = 0  # those and every task pending at the cut or a second later
    rescue: float = 0.0  # until every lease ``a`` held was taken back
    back_in_play: float = 0.0  # until every held or pending task was leased elsewhere or final
    resume: float = 0.0  # from the heal until ``a`` ran and recorded a task submitted then
    dropped: int = 0  # packets the cut dropped

    def line(self, backend: str) -> str:
        return (f"partition-{self.how} {backend}: a held {self.held} lease(s), {self.waiting} task(s) waiting; "
                f"cut -> leases rescued {self.rescue:.1f}s, all back in play {self.back_in_play:.1f}s "
                f"(bound {RESCUE_BOUND:.1f}s); heal -> a task of a run and recorded {self.resume:.2f}s "
                f"(bound {RESUME_BOUND:.1f}s); {self.dropped} packets dropped")


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    require_tools()
    net = Network(("a", "b"))
    try:
        net.up()
        yield net
    finally:
        net.down()


@pytest.fixture(scope="module", params=server_params())
def server(request: pytest.FixtureRequest, network: Network) -> Iterator[PrivateServer]:
    started = private_server(request.param, network)
    try:
        yield started
    finally:
        started.close()


def statement_marks(server: PrivateServer, harness: ChaosHarness, how: str) -> tuple[int, list[bytes]]:
    """Where (byte offset in a TCP payload) and what (16 bytes each) marks the statements of a
    host after which the ``how`` cut lands. Both protocols put a query's text at byte 5.

    - ``mid-transaction``: a statement that writes rows the host leases or leased. On MariaDB
      ``UPDATE <table> SET status = 'running'`` (a lease) or ``… 'succeeded'`` (a batched
      success), inside a transaction after its ``SELECT … FOR UPDATE``: the server is left
      holding that transaction's row locks. On PostgreSQL the ``EXECUTE`` of the prepared
      lease or batched success, one statement the server runs and commits, its answer lost.
    - ``limits``: the first statement of a lease under limits, which locks the limit rows
      every other host's lease must lock too (``BEGIN`` rides with it on PostgreSQL).
    """
    if how == "limits":
        return 5, [b"SELECT kind, nam" if server.backend == "mariadb" else b"BEGIN; SELECT ki"]
    if server.backend == "mariadb":
        return 5 + len(f"UPDATE {harness.table}"), [b" SET status = 'r", b" SET status = 's"]
    sql = statements("postgres", harness.table)
    # a's two queues, and the keys its workers have handlers for (as `Worker` passes them)
    keys, _ = sql.known_keys(tuple(sorted(harness.runtime.plugins.registry.tasks)))
    lease = numbered(sql.lease.fill(queues=placeholders(2), keys=keys))
    return 5, [f"EXECUTE {prepared_name(statement)}"[:16].encode() for statement in (lease, sql.complete_many_arrays)]


def owners_prefix(process: SupervisorProcess) -> str:
    """The start of every lease owner of ``process``'s workers (``host:supervisor-pid.``)."""
    return f"{socket.gethostname()}:{process.pid}."


def unsettled(harness: ChaosHarness) -> list[tuple[int, str, str | None]]:
    rows = harness.runtime.db.execute_sql(
        f"SELECT id, status, lease_owner FROM {harness.table} WHERE status IN ('pending', 'running')").fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


def cut_and_heal(harness: ChaosHarness, network: Network, server: PrivateServer, host: SupervisorProcess,
                 how: str) -> Cut:
    """Cut host ``a`` (``how``: ``random``, or after a statement: see `statement_marks`) for
    `CUT` seconds, then heal."""
    cut = Cut(how)
    pids = [host.pid, *host.worker_pids()]
    mine = owners_prefix(host)
    if how == "random":
        time.sleep(random.uniform(0.2, 1.0))
        cut_at = network.cut("a")
    else:
        offset, marks = statement_marks(server, harness, how)
        network.cut_after("a", server.port, offset, marks)
        deadline = time.monotonic() + 20
        while not network.is_cut("a"):
            assert time.monotonic() < deadline, "no marked statement of host a reached the server in 20s"
            time.sleep(0.01)
        cut_at = time.time()
    faults = [harness.faults.begin("partition", pid) for pid in pids]
    try:
        at_cut = unsettled(harness)
        held = {task_id for task_id, status, owner in at_cut if status == "running" and (owner or "").startswith(mine)}
        waiting = held | {task_id for task_id, status, _ in at_cut if status == "pending"}
        cut.held, cut.waiting = len(held), len(waiting)
        if how == "random":  # the cut is silence, not a refusal: a connect from a times out
            answer = network.probe("a", server.port)
            assert answer == "timeout", f"a connect across the cut got {answer!r}, not silence"
        time.sleep(max(0.0, cut_at + 1.0 - time.time()))
        # and what was submitted just after the cut: a host whose leases wait on a lock of a is frozen too
        waiting |= {task_id for task_id, status, _ in unsettled(harness) if status == "pending"}
        cut.waiting = len(waiting)
        while waiting and time.time() < cut_at + CUT:
            in_play = {task_id for task_id, status, owner in unsettled(harness)
                       if status == "pending" or (status == "running" and (owner or "").startswith(mine))}
            now = time.time() - cut_at
            if held - in_play:
                cut.rescue = now
            held &= in_play
            waiting &= in_play
            cut.back_in_play = now
            time.sleep(0.05)
        if held:
            cut.rescue = time.time() - cut_at
        time.sleep(max(0.0, cut_at + CUT - time.time()))
        cut.dropped = network.dropped()
        healed_at = network.heal()
    finally:
        network.heal()
        for fault in faults:
            harness.faults.end(fault)
    cut.resume = resumed(harness, healed_at)
    assert host.worker_pids() == pids[1:], "host a's workers were restarted"
    assert not waiting, (f"tasks {sorted(waiting)[:10]} were still pending or leased by the cut host "
                         f"{CUT:.0f}s after the cut (held: {sorted(held)[:10]})")
    return cut


def resumed(harness: ChaosHarness, healed_at: float) -> float:
    """Seconds from the heal until host ``a`` has run and recorded a task submitted at the heal
    to a queue only it serves (so it measures ``a``, not how fast ``b`` takes the stream)."""
    (task_id,) = harness.submit("chaos_work", [{"seconds": 0.05}], queue=ONLY_A)
    statuses = harness.wait_final([task_id], 15)
    assert statuses == {task_id: "succeeded"}, f"host a did not run its task within 15s of the heal: {statuses}"
    finished = harness.runtime.store.get(task_id)["finished_at"]  # type: ignore[index]
    return float(finished.timestamp() - healed_at)


def fenced_writes(log: str) -> int:
    """``a``'s writes the fence refused: outcome writes of rescued leases, heartbeats of them."""
    rejected = len(re.findall(r"was lost before its outcome was recorded", log))
    taken_over = sum(int(total) - int(renewed) for renewed, total in
                     re.findall(r"heartbeat renewed (\d+) of (\d+) leases", log))
    return rejected + taken_over


def test_partitioned_host(server: PrivateServer, network: Network, tmp_path: Path) -> None:
    harness = ChaosHarness(server.url, new_table(), tmp_path, backend=server.backend, lease_timeout=LEASE,
                           workers=2, threads=3, scan_interval=SCAN, rescue_grace=GRACE + 1)
    try:
        run(harness, network, server)
    finally:
        harness.close(drop=True)


def run(harness: ChaosHarness, network: Network, server: PrivateServer) -> None:
    url = server.url_at(network.db_address)
    hosts = {name: harness.supervisor(2, extra_env={"GTA_DATABASE_URL": url, "GTA_QUEUES": queues},
                                      prefix=network.enter(name))
             for name, queues in (("a", f"default,{ONLY_A}"), ("b", "default"))}
    cuts = []
    with harness.stream("chaos_work", {"seconds": 0.05}, batch=2, every=0.1, rolled_back_every=0):
        time.sleep(1.0)
        harness.submit("chaos_work", [{"seconds": LONG}] * 2)  # one may run on a, through the cut
        harness.submit("chaos_work", [{"seconds": 0.5}] * 8)
        cuts.append(cut_and_heal(harness, network, server, hosts["a"], "random"))
        time.sleep(1.0)
        cuts.append(cut_and_heal(harness, network, server, hosts["a"], "mid-transaction"))
        # every lease now locks the queue's limit row (a cap no lease reaches), in one transaction
        limit_queue("default", concurrency=10_000, runtime=harness.runtime)
        time.sleep(1.5)  # each worker looks whether limits exist once a second
        cuts.append(cut_and_heal(harness, network, server, hosts["a"], "limits"))
        time.sleep(1.0)
    report = harness.check(f"partition-{server.backend}", within=60)
    log: Any = hosts["a"].log()
    fenced = fenced_writes(log)
    for cut in cuts:
        REPORTS.append(cut.line(server.backend))
    REPORTS.append(f"partition {server.backend}: {fenced} stale write(s) of host a fenced, "
                   f"{report.duplicates} duplicate execution(s) ({report.duplicate_reasons or '-'}), "
                   f"{report.executions} executions of {report.tasks} tasks, lost {report.lost}")
    for cut in cuts:
        assert cut.rescue <= RESCUE_BOUND and cut.back_in_play <= RESCUE_BOUND, cut.line(server.backend)
        assert cut.resume <= RESUME_BOUND, cut.line(server.backend)
    assert set(report.duplicate_reasons) <= {"partition"}, report.line()
