"""AgentClient against a real agent through a TCP proxy that the tests cut and mend."""

from __future__ import annotations

import logging
import re
import threading

import grpc
import pytest

from hub_client.client import AgentClient, AgentError, ClientConfig, RetryPolicy
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests.conftest import requires_restic
from tests.faults import CuttableProxy
from tests.harness import write_tree

pytestmark = requires_restic

# restic's own bandwidth limit: a few megabytes take seconds, so the proxy can be cut while the
# backup really runs.
SLOW = "upload_limit_kib = 512\ndownload_limit_kib = 512"


@pytest.fixture
def proxied(agent_factory):
    """(agent, proxy) — a slow agent behind a cuttable TCP proxy."""
    agent = agent_factory(limits=SLOW)
    proxy = CuttableProxy(("127.0.0.1", agent.port))
    yield agent, proxy
    proxy.close()


def client_for(proxy: CuttableProxy, **config) -> AgentClient:
    return AgentClient(ClientConfig(target=f"127.0.0.1:{proxy.port}", **config))


def messages(caplog, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hub_client.client" and fragment in r.getMessage()]


class Reopenings(logging.Handler):
    """Records (from_seq the client reopens at, events the consumer had received by then)."""

    def __init__(self, seen: list) -> None:
        super().__init__(logging.INFO)
        self.seen = seen
        self.reopenings: list[tuple[int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"reopening progress of \S+ from seq (\d+)", record.getMessage())
        if match:
            self.reopenings.append((int(match.group(1)), len(self.seen)))


def test_progress_survives_a_cut_connection_without_gaps_or_repeats(proxied, project_id):
    agent, proxy = proxied
    write_tree(agent.home(project_id), files=300, size=8000)  # ~2.4 MB: several seconds at 512 KiB/s
    retry = RetryPolicy(attempts=10, initial_backoff=0.1, max_backoff=0.5)
    seen: list[pb.ProgressEvent] = []
    watcher = Reopenings(seen)
    logger = logging.getLogger("hub_client.client")
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    try:
        with client_for(proxy, retry=retry, deadline=30, stream_idle_timeout=15, reconnect_attempts=40) as client:
            handle = client.backup(project_id)
            cut_after = None
            mender = threading.Timer(1.0, proxy.mend)
            for event in handle.progress():
                seen.append(event)
                if cut_after is None and not event.terminal:
                    cut_after = event.seq
                    proxy.cut()  # resets the stream's connection mid-operation
                    mender.start()
            mender.join()
            final = handle.wait(timeout=120)
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(logging.NOTSET)

    seqs = [event.seq for event in seen]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert seen[-1].terminal and not any(event.terminal for event in seen[:-1])
    assert seen[-1].state == pb.SUCCEEDED
    assert cut_after is not None and cut_after < seqs[-1]
    # The stream was reopened after the cut, each time from the seq after the last one delivered.
    assert watcher.reopenings, "the stream was never reopened: the cut did not land mid-stream"
    assert all(from_seq == delivered + 1 for from_seq, delivered in watcher.reopenings), watcher.reopenings
    assert cut_after < watcher.reopenings[0][0] <= seqs[-1]
    assert final.state == pb.SUCCEEDED and final.summary.snapshot_id == seen[-1].summary.snapshot_id
    assert final.summary.files_processed >= 300


def test_a_unary_call_through_a_cut_that_is_mended_in_the_retry_window_succeeds(proxied, caplog):
    caplog.set_level(logging.INFO, logger="hub_client.client")
    agent, proxy = proxied
    retry = RetryPolicy(attempts=10, initial_backoff=0.2, max_backoff=1.0)
    with client_for(proxy, retry=retry, deadline=10) as client:
        assert client.capabilities().engine == "restic"  # a connection exists ...
        proxy.cut()  # ... and is reset; new connections are refused
        mender = threading.Timer(0.7, proxy.mend)
        mender.start()
        try:
            status = client.host_status()
        finally:
            mender.join()
    assert status.host_id == "test-host"
    assert messages(caplog, "GetHostStatus attempt 1/10 UNAVAILABLE")  # it did fail first, and was retried


def test_a_unary_call_through_a_cut_that_stays_cut_raises_unavailable(proxied, caplog):
    caplog.set_level(logging.INFO, logger="hub_client.client")
    agent, proxy = proxied
    proxy.cut()
    retry = RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1)
    with client_for(proxy, retry=retry, deadline=10) as client:
        with pytest.raises(AgentError) as caught:
            client.host_status()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(messages(caplog, "GetHostStatus attempt")) == 2  # 3 tries: 2 retried failures, then raised
