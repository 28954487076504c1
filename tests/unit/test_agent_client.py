"""AgentClient against an in-process gRPC server whose servicer injects faults.

The double below is not an agent: it only scripts what the wire does (sleep, fail with a code,
break or silence a progress stream) so the client's deadlines, retries, metadata, TLS and
stream reconnection can be shown. The agent itself is exercised in
tests/integration/test_agent_client.py.
"""

from __future__ import annotations

import datetime
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import pytest

from hub_client.client import (
    OK_STATES,
    TERMINAL_STATES,
    AgentClient,
    AgentError,
    ClientConfig,
    OperationHandle,
    RetryPolicy,
    TlsConfig,
    new_request_id,
    state_name,
)
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.proto.buckets.v1 import agent_pb2_grpc as pb_grpc
from tests.certs import Pki, write

OP_ID = "op-test-1"
FAST_RETRY = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05)
SLOW_LIMIT = 10.0  # generous upper bound for calls that a short deadline must cut


# ---------------------------------------------------------------- the double


@dataclass
class Seen:
    """One call the double received."""

    request: object
    metadata: dict[str, str]
    from_seq: int | None = None


def ok(response) -> Callable:
    return lambda request, context: response


def fail(code: grpc.StatusCode, message: str = "injected") -> Callable:
    def behaviour(request, context):
        context.abort(code, f"{message} {code.name}")

    return behaviour


def events(count: int, *, final=pb.SUCCEEDED) -> list[pb.ProgressEvent]:
    result = [pb.ProgressEvent(operation_id=OP_ID, seq=seq, state=pb.RUNNING, phase="upload",
                               percent=100.0 * seq / count) for seq in range(1, count)]
    result.append(pb.ProgressEvent(operation_id=OP_ID, seq=count, state=final, phase="done", terminal=True,
                                   summary=pb.OperationSummary(snapshot_id="snap-1")))
    return result


class Double(pb_grpc.AgentServicer):
    """Scripted servicer: ``on(method, *behaviours)`` — the n-th call uses the n-th behaviour
    (the last one repeats). Streams are scripted with ``streams(*plans)`` the same way."""

    def __init__(self) -> None:
        self.seen: dict[str, list[Seen]] = {}
        self._scripts: dict[str, list[Callable]] = {}
        self._lock = threading.Lock()
        self.cancelled = threading.Event()  # a call's context saw its RPC end early (add_callback)
        self.inactive_seen = threading.Event()  # a handler polling is_active() saw it go False

    def on(self, method: str, *behaviours: Callable) -> None:
        self._scripts[method] = list(behaviours)

    def _record(self, method: str, request, context) -> int:
        with self._lock:
            calls = self.seen.setdefault(method, [])
            calls.append(Seen(request, dict(context.invocation_metadata()),
                              getattr(request, "from_seq", None)))
            return len(calls) - 1

    def _dispatch(self, method: str, request, context):
        index = self._record(method, request, context)
        script = self._scripts.get(method)
        if not script:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} not scripted")
        return script[min(index, len(script) - 1)](request, context)

    def calls(self, method: str) -> list[Seen]:
        return self.seen.get(method, [])

    # every unary RPC goes through the script
    def Backup(self, request, context):
        return self._dispatch("Backup", request, context)

    def Restore(self, request, context):
        return self._dispatch("Restore", request, context)

    def GetOperation(self, request, context):
        return self._dispatch("GetOperation", request, context)

    def CancelOperation(self, request, context):
        return self._dispatch("CancelOperation", request, context)

    def GetCapabilities(self, request, context):
        return self._dispatch("GetCapabilities", request, context)

    def ListSnapshots(self, request, context):
        return self._dispatch("ListSnapshots", request, context)

    def Freeze(self, request, context):
        return self._dispatch("Freeze", request, context)

    def MarkEdited(self, request, context):
        return self._dispatch("MarkEdited", request, context)

    def StreamProgress(self, request, context):
        yield from self._dispatch("StreamProgress", request, context)

    # ------------------------------------------------------------ behaviours needing the double

    def sleep(self, seconds: float) -> Callable:
        """Hold the call for ``seconds`` unless the client goes away first."""

        def behaviour(request, context):
            context.add_callback(self.cancelled.set)
            end = time.monotonic() + seconds
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.01)
            if not context.is_active():
                self.inactive_seen.set()
            return pb.Capabilities(engine="too-late")

        return behaviour

    def stream(self, all_events: list[pb.ProgressEvent], *, until: int | None = None, then: str = "end",
               replay_from: int | None = None, keepalives: float = 0.0, pace: float = 0.0) -> Callable:
        """A StreamProgress plan: the operation, events from ``from_seq`` (or from ``replay_from``,
        ignoring the request) up to seq ``until``, then ``then``: "end" (close), "abort" (UNAVAILABLE
        mid-stream) or "silent" (nothing more, not even keep-alives, until the client gives up on it).
        ``keepalives``: seconds of keep-alives (every 0.05 s) sent before the events."""

        def plan(request, context):
            yield pb.ProgressUpdate(operation=pb.Operation(id=request.operation_id, state=pb.RUNNING,
                                                           last_seq=len(all_events) - 1))
            end = time.monotonic() + keepalives
            while time.monotonic() < end:
                yield pb.ProgressUpdate(keep_alive=pb.KeepAlive())
                time.sleep(0.05)
            start = replay_from if replay_from is not None else max(request.from_seq, 1)
            for event in all_events:
                if event.seq < start or (until is not None and event.seq > until):
                    continue
                if pace:
                    time.sleep(pace)
                yield pb.ProgressUpdate(event=event)
            if then == "abort":
                context.abort(grpc.StatusCode.UNAVAILABLE, "stream broken by the double")
            if then == "silent":
                context.add_callback(self.cancelled.set)
                deadline = time.monotonic() + 30
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not context.is_active():
                    self.inactive_seen.set()

        return plan


@dataclass
class Server:
    double: Double
    server: grpc.Server
    port: int
    clients: list[AgentClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **config) -> AgentClient:
        config.setdefault("retry", FAST_RETRY)
        client = AgentClient(ClientConfig(target=config.pop("target", self.target), **config))
        self.clients.append(client)
        return client


def start_server(credentials: grpc.ServerCredentials | None = None) -> Server:
    double = Double()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_AgentServicer_to_server(double, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return Server(double, server, port)


@pytest.fixture
def served():
    running = start_server()
    yield running
    for client in running.clients:
        client.close()
    running.server.stop(0)


# ---------------------------------------------------------------- deadlines and retries


def test_a_call_far_past_its_deadline_ends_deadline_exceeded_and_the_server_sees_it_cancelled(served):
    served.double.on("GetCapabilities", served.double.sleep(60))
    client = served.client(deadline=0.5)
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        client.capabilities()
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < SLOW_LIMIT  # cut long before the server's 60 s
    assert served.double.cancelled.wait(SLOW_LIMIT)  # the server's context got the cancellation ...
    assert served.double.inactive_seen.wait(SLOW_LIMIT)  # ... and is_active() went False
    assert len(served.double.calls("GetCapabilities")) == 1  # DEADLINE_EXCEEDED is not retried


def test_the_per_call_timeout_overrides_the_config_deadline(served):
    served.double.on("GetCapabilities", served.double.sleep(60))
    client = served.client(deadline=120.0)
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        client.call("GetCapabilities", pb.GetCapabilitiesRequest(), timeout=0.3)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < SLOW_LIMIT


def test_unavailable_twice_then_ok_succeeds_on_the_third_call_with_one_request_id(served):
    unavailable = fail(grpc.StatusCode.UNAVAILABLE)
    served.double.on("Backup", unavailable, unavailable, ok(pb.Operation(id=OP_ID, state=pb.PENDING)))
    client = served.client()
    handle = client.backup("project-a", force=True, tags=["k=v"])
    assert isinstance(handle, OperationHandle)
    assert handle.id == OP_ID and handle.operation.state == pb.PENDING
    calls = served.double.calls("Backup")
    assert len(calls) == 3
    request_ids = {call.request.request_id for call in calls}
    assert len(request_ids) == 1 and request_ids != {""}
    assert all(call.request.force and list(call.request.tags) == ["k=v"] for call in calls)  # fields pass through


def test_a_given_request_id_is_sent_as_is(served):
    served.double.on("Backup", ok(pb.Operation(id=OP_ID)))
    served.client().backup("project-a", request_id="caller-chosen")
    assert served.double.calls("Backup")[0].request.request_id == "caller-chosen"


def test_unavailable_forever_gives_up_after_exactly_the_configured_attempts(served):
    served.double.on("GetCapabilities", fail(grpc.StatusCode.UNAVAILABLE, "down"))
    client = served.client(retry=RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.02))
    with pytest.raises(AgentError) as caught:
        client.capabilities()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "down UNAVAILABLE"
    assert len(served.double.calls("GetCapabilities")) == 4


def test_one_attempt_means_no_retry(served):
    served.double.on("GetCapabilities", fail(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(AgentError):
        served.client(retry=RetryPolicy(attempts=1)).capabilities()
    assert len(served.double.calls("GetCapabilities")) == 1


@pytest.mark.parametrize("code", [
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
])
def test_other_codes_are_raised_at_once_without_retry(served, code):
    served.double.on("Backup", fail(code, "nope"))
    with pytest.raises(AgentError) as caught:
        served.client().backup("project-a")
    assert caught.value.code is code
    assert caught.value.message == f"nope {code.name}"
    assert str(caught.value) == f"{code.name}: nope {code.name}"
    assert len(served.double.calls("Backup")) == 1


def test_the_channel_reconnects_at_least_as_often_as_the_last_retry_waits():
    """The fault suite's flake: after a cut, the channel's own 5 s reconnect backoff outlasted the
    client's retries, which all failed at once with the stale "connection refused"."""
    policy = RetryPolicy()  # sleeps up to 0.2, 0.4, 0.8, 1.6 s, each at least half of that
    assert policy.shortest_last_pause() == 0.8
    assert all(policy.shortest_last_pause() <= policy.backoff(policy.attempts - 1) for _ in range(200))
    assert RetryPolicy(attempts=10, initial_backoff=0.1, max_backoff=0.5).shortest_last_pause() == 0.25
    assert RetryPolicy(attempts=1, initial_backoff=0.3).shortest_last_pause() == 0.3


def test_retry_backoff_grows_and_is_capped():
    policy = RetryPolicy(attempts=10, initial_backoff=0.1, max_backoff=0.5, multiplier=2.0)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        for _ in range(20):
            assert ceiling / 2 <= policy.backoff(failures) <= ceiling


# ---------------------------------------------------------------- token


def test_the_token_is_sent_on_unary_and_stream_calls_and_kept_out_of_repr(served):
    token = "tok-3f9a7c1e-secret"
    served.double.on("GetCapabilities", ok(pb.Capabilities(engine="restic")))
    served.double.on("StreamProgress", served.double.stream(events(3)))
    client = served.client(token=token)
    assert client.capabilities().engine == "restic"
    assert [event.seq for event in client.progress(OP_ID)] == [1, 2, 3]
    assert served.double.calls("GetCapabilities")[0].metadata.get("authorization") == f"Bearer {token}"
    assert served.double.calls("StreamProgress")[0].metadata.get("authorization") == f"Bearer {token}"
    assert token not in repr(client.config) and token not in repr(client)


def test_no_token_sends_no_authorization(served):
    served.double.on("GetCapabilities", ok(pb.Capabilities()))
    served.client().capabilities()
    assert "authorization" not in served.double.calls("GetCapabilities")[0].metadata


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki():
    pytest.importorskip("cryptography")
    return Pki.new("buckets test CA")


def tls_server(pki: Pki, *, require_client_auth: bool, dns=("localhost",), ips=("127.0.0.1",)) -> Server:
    cert, key = pki.issue("agent", dns=tuple(dns), ips=tuple(ips))
    credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=pki.ca_cert,
                                              require_client_auth=require_client_auth)
    running = start_server(credentials)
    running.double.on("GetCapabilities", ok(pb.Capabilities(engine="over-tls")))
    return running


@pytest.fixture
def stop_later():
    servers: list[Server] = []
    yield servers.append
    for running in servers:
        for client in running.clients:
            client.close()
        running.server.stop(0)


ONE_TRY = RetryPolicy(attempts=1)


def test_tls_with_the_right_ca_connects_and_another_ca_is_refused(pki, tmp_path, stop_later):
    running = tls_server(pki, require_client_auth=False)
    stop_later(running)
    ca = write(tmp_path / "ca.pem", pki.ca_cert)
    other = write(tmp_path / "other-ca.pem", Pki.new("another CA").ca_cert)
    assert running.client(tls=TlsConfig(ca_file=ca), deadline=10).capabilities().engine == "over-tls"
    with pytest.raises(AgentError) as caught:
        running.client(tls=TlsConfig(ca_file=other), deadline=10, retry=ONE_TRY).capabilities()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(AgentError) as plaintext:  # a plaintext client does not get in either
        running.client(deadline=10, retry=ONE_TRY).capabilities()
    assert plaintext.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(running.double.calls("GetCapabilities")) == 1


def test_server_name_overrides_the_name_checked_in_the_certificate(pki, tmp_path, stop_later):
    running = tls_server(pki, require_client_auth=False, dns=("agent-7.hosts.internal",), ips=())
    stop_later(running)
    ca = write(tmp_path / "ca.pem", pki.ca_cert)
    with pytest.raises(AgentError) as caught:  # 127.0.0.1 is not in the certificate
        running.client(tls=TlsConfig(ca_file=ca), deadline=10, retry=ONE_TRY).capabilities()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    tls = TlsConfig(ca_file=ca, server_name="agent-7.hosts.internal")
    assert running.client(tls=tls, deadline=10).capabilities().engine == "over-tls"


def test_mtls_refuses_a_client_without_a_certificate_and_accepts_one_from_the_ca(pki, tmp_path, stop_later):
    running = tls_server(pki, require_client_auth=True)
    stop_later(running)
    ca = write(tmp_path / "ca.pem", pki.ca_cert)
    with pytest.raises(AgentError) as caught:
        running.client(tls=TlsConfig(ca_file=ca), deadline=10, retry=ONE_TRY).capabilities()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    foreign_cert, foreign_key = Pki.new("rogue CA").issue("hub", client=True)
    with pytest.raises(AgentError):
        running.client(tls=TlsConfig(ca_file=ca, cert_file=write(tmp_path / "rogue.pem", foreign_cert),
                                     key_file=write(tmp_path / "rogue.key", foreign_key)),
                       deadline=10, retry=ONE_TRY).capabilities()
    assert running.double.calls("GetCapabilities") == []
    cert, key = pki.issue("hub", client=True)
    tls = TlsConfig(ca_file=ca, cert_file=write(tmp_path / "hub.pem", cert),
                    key_file=write(tmp_path / "hub.key", key))
    assert running.client(tls=tls, deadline=10).capabilities().engine == "over-tls"
    assert len(running.double.calls("GetCapabilities")) == 1


def test_a_client_certificate_needs_its_key():
    with pytest.raises(ValueError):
        TlsConfig(cert_file=Path("hub.pem"))


# ---------------------------------------------------------------- progress


def seqs(iterator) -> list[int]:
    return [event.seq for event in iterator]


def test_progress_reopens_a_broken_stream_from_the_next_seq(served):
    double = served.double
    all_events = events(12)
    double.on("StreamProgress",
              double.stream(all_events, until=4, then="abort"),
              double.stream(all_events, until=9, then="abort"),
              double.stream(all_events))
    received = list(served.client().progress(OP_ID))
    assert [e.seq for e in received] == list(range(1, 13))
    assert received[-1].terminal and received[-1].state == pb.SUCCEEDED
    assert [call.from_seq for call in double.calls("StreamProgress")] == [1, 5, 10]


def test_progress_reopens_a_silent_stream_after_the_idle_timeout(served):
    double = served.double
    all_events = events(8)
    double.on("StreamProgress",
              double.stream(all_events, until=3, then="silent"),
              double.stream(all_events))
    client = served.client(stream_idle_timeout=0.5)
    started = time.monotonic()
    assert seqs(client.progress(OP_ID)) == list(range(1, 9))
    assert time.monotonic() - started < SLOW_LIMIT  # not the double's 30 s of silence
    assert [call.from_seq for call in double.calls("StreamProgress")] == [1, 4]
    assert double.inactive_seen.wait(SLOW_LIMIT)  # the silent stream was cancelled, not left open


def test_progress_never_repeats_events_a_stream_replays(served):
    double = served.double
    all_events = events(10)
    double.on("StreamProgress",
              double.stream(all_events, until=6, then="abort"),
              double.stream(all_events, replay_from=1))  # ignores from_seq: sends 1..10 again
    assert seqs(served.client().progress(OP_ID)) == list(range(1, 11))
    assert [call.from_seq for call in double.calls("StreamProgress")] == [1, 7]


def test_progress_never_skips_a_seq(served):
    double = served.double
    all_events = events(6)
    double.on("StreamProgress",
              double.stream(all_events, until=2, then="abort"),
              double.stream(all_events, replay_from=5),  # a gap: 3 and 4 missing
              double.stream(all_events))
    assert seqs(served.client().progress(OP_ID)) == list(range(1, 7))
    assert [call.from_seq for call in double.calls("StreamProgress")] == [1, 3, 3]


def test_progress_starts_from_the_given_seq(served):
    double = served.double
    double.on("StreamProgress", double.stream(events(9)))
    assert seqs(served.client().progress(OP_ID, from_seq=6)) == [6, 7, 8, 9]
    assert double.calls("StreamProgress")[0].from_seq == 6


def test_keep_alives_hold_a_stream_open_past_the_idle_timeout(served):
    double = served.double
    double.on("StreamProgress", double.stream(events(3), keepalives=1.5))
    assert seqs(served.client(stream_idle_timeout=0.5).progress(OP_ID)) == [1, 2, 3]
    assert len(double.calls("StreamProgress")) == 1


def test_a_slow_consumer_is_not_mistaken_for_a_silent_stream(served):
    double = served.double
    double.on("StreamProgress", double.stream(events(3)))
    received = []
    for event in served.client(stream_idle_timeout=0.3).progress(OP_ID):
        received.append(event.seq)
        time.sleep(0.6)
    assert received == [1, 2, 3]
    assert len(double.calls("StreamProgress")) == 1


def test_progress_raises_other_codes_at_once(served):
    served.double.on("StreamProgress", fail(grpc.StatusCode.NOT_FOUND, "no such operation"))
    with pytest.raises(AgentError) as caught:
        list(served.client().progress(OP_ID))
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert len(served.double.calls("StreamProgress")) == 1


def test_progress_gives_up_after_the_reconnect_attempts(served):
    served.double.on("StreamProgress", fail(grpc.StatusCode.UNAVAILABLE, "gone"))
    with pytest.raises(AgentError) as caught:
        list(served.client(reconnect_attempts=3).progress(OP_ID))
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(served.double.calls("StreamProgress")) == 4  # the first opening and 3 reopenings


def test_progress_past_the_end_of_a_finished_operation_yields_nothing(served):
    double = served.double

    def finished(request, context):
        yield pb.ProgressUpdate(operation=pb.Operation(id=OP_ID, state=pb.SUCCEEDED, last_seq=5))

    double.on("StreamProgress", finished)
    assert seqs(served.client().progress(OP_ID, from_seq=6)) == []
    assert len(double.calls("StreamProgress")) == 1


def test_wait_follows_a_broken_stream_and_returns_the_terminal_operation(served):
    double = served.double
    all_events = events(5)
    double.on("Backup", ok(pb.Operation(id=OP_ID, state=pb.PENDING)))
    double.on("StreamProgress", double.stream(all_events, until=2, then="abort"), double.stream(all_events))
    double.on("GetOperation", ok(pb.Operation(id=OP_ID, state=pb.SUCCEEDED, last_seq=5)))
    handle = served.client().backup("project-a")
    assert not handle.done
    final = handle.wait(timeout=30)
    assert final.state == pb.SUCCEEDED and handle.done and handle.operation == final
    assert [call.from_seq for call in double.calls("StreamProgress")] == [1, 3]


def test_wait_raises_deadline_exceeded_when_the_timeout_passes(served):
    double = served.double
    double.on("StreamProgress", double.stream(events(3), keepalives=60))
    client = served.client(stream_idle_timeout=5)
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        client.wait(OP_ID, timeout=0.5)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < SLOW_LIMIT


def test_handle_progress_updates_the_last_seen_operation(served):
    double = served.double
    double.on("StreamProgress", double.stream(events(4)))
    handle = OperationHandle(served.client(), pb.Operation(id=OP_ID, state=pb.PENDING))
    assert seqs(handle.progress()) == [1, 2, 3, 4]
    assert handle.done and handle.operation.state == pb.SUCCEEDED
    assert handle.operation.summary.snapshot_id == "snap-1" and handle.operation.last_seq == 4


def test_handle_refresh_and_cancel(served):
    double = served.double
    double.on("GetOperation", ok(pb.Operation(id=OP_ID, state=pb.RUNNING)))
    double.on("CancelOperation", ok(pb.Operation(id=OP_ID, state=pb.CANCELLING)))
    handle = served.client().operation(OP_ID)
    assert handle.operation.state == pb.RUNNING and not handle.done
    assert handle.cancel().state == pb.CANCELLING and handle.operation.state == pb.CANCELLING
    assert double.calls("CancelOperation")[0].request.operation_id == OP_ID


# ---------------------------------------------------------------- typed unary helpers


def test_snapshots_follow_every_page(served):
    pages = {
        "": pb.ListSnapshotsResponse(snapshots=[pb.Snapshot(id="c"), pb.Snapshot(id="b")], next_page_token="p2"),
        "p2": pb.ListSnapshotsResponse(snapshots=[pb.Snapshot(id="a")]),
    }
    served.double.on("ListSnapshots", lambda request, context: pages[request.page_token])
    assert [s.id for s in served.client().snapshots("project-a", page_size=2)] == ["c", "b", "a"]
    assert [(c.request.page_token, c.request.page_size, c.request.project_id)
            for c in served.double.calls("ListSnapshots")] == [("", 2, "project-a"), ("p2", 2, "project-a")]


def test_freeze_and_mark_edited(served):
    served.double.on("Freeze", ok(pb.FreezeResponse(
        frozen=True, stopped=[pb.StoppedProcess(pid=7, command="w", action="killed", paths=["/p/log"])])))
    served.double.on("MarkEdited", ok(pb.MarkEditedResponse()))
    client = served.client()
    answer = client.freeze("project-a", writers=pb.WRITERS_REFUSE)
    assert answer.frozen and [(s.pid, s.action) for s in answer.stopped] == [(7, "killed")]
    assert served.double.calls("Freeze")[0].request.writers == pb.WRITERS_REFUSE
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    assert client.mark_edited("project-a", when) is None
    client.mark_edited("project-a")
    first, second = served.double.calls("MarkEdited")
    assert first.request.time.ToDatetime(tzinfo=datetime.timezone.utc) == when
    assert not second.request.HasField("time")


def test_module_constants():
    assert OK_STATES < TERMINAL_STATES
    assert pb.FAILED in TERMINAL_STATES and pb.RUNNING not in TERMINAL_STATES
    assert state_name(pb.UP_TO_DATE) == "UP_TO_DATE"
    assert new_request_id() != new_request_id()
