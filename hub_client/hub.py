"""The hub's side of multi-host work: its store, one client per agent, and the move flows.

``Hub`` is what the hub server (or the operator CLI) holds: it registers hosts and projects,
probes agents, and starts, resumes, retries and cancels moves through :mod:`hub_client.move`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from hub_client.client import AgentClient, AgentError, ClientConfig
from hub_client.move import MoveRefused, MoveRunner, MoveSettings, Observer, clean_source, timestamp_or_none
from hub_client.proto.buckets.v1 import agent_pb2 as pb
from hub_client.store import Host, Move, MoveInProgress, MoveStatus, Project, Store

ClientConfigFor = Callable[[str], ClientConfig]


class Hub:
    """Takes an open :class:`Store`; ``client_config`` turns an agent address into the client
    settings (TLS, token, deadlines) used for it."""

    def __init__(
        self, store: Store, *, client_config: ClientConfigFor = lambda address: ClientConfig(target=address),
        settings: MoveSettings | None = None,
    ) -> None:
        self.store = store
        self.client_config = client_config
        self.settings = settings or MoveSettings()
        self._clients: dict[str, AgentClient] = {}

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(self, host: Host) -> AgentClient:
        client = self._clients.get(host.address)
        if client is None:
            client = self._clients[host.address] = AgentClient(self.client_config(host.address))
        return client

    # ------------------------------------------------------------ hosts and projects

    def add_host(self, host_id: str, address: str, region: str, status: str = "running") -> Host:
        return self.store.upsert_host(Host(host_id, address, region, status, None))

    def probe_host(self, host_id: str) -> tuple[Host, pb.HostStatus | None]:
        """Ask the host's agent for its status; a host that answers is recorded as seen now."""
        host = self.store.get_host(host_id)
        try:
            status = self.client(host).host_status()
        except AgentError:
            return host, None
        seen = self.store.upsert_host(Host(host.id, host.address, host.region, host.status, _now()))
        return seen, status

    def add_project(self, project_id: str, host_id: str | None, region: str, repository: str = "") -> Project:
        return self.store.upsert_project(Project(project_id, host_id, region, repository))

    def refresh_project(self, project_id: str) -> Project:
        """Copy the project's last backup and last change from the agent of its host into the store."""
        project = self.store.get_project(project_id)
        if project.host_id is None:
            return project
        status = self.client(self.store.get_host(project.host_id)).project_status(project_id)
        return self.store.upsert_project(Project(
            project.id, project.host_id, project.region, project.repository or status.repository_location,
            timestamp_or_none(status, "last_backup") or project.last_backup,
            timestamp_or_none(status, "last_change") or project.last_edited,
        ))

    # ------------------------------------------------------------ moves

    def runner(self, move_id: str, *, observer: Observer | None = None,
               before_step: Callable[[str], None] | None = None) -> MoveRunner:
        return MoveRunner(self.store, self.client, move_id, settings=self.settings, observer=observer,
                          before_step=before_step)

    def move(self, project_id: str, target_host: str, *, force: bool = False, observer: Observer | None = None,
             before_step: Callable[[str], None] | None = None) -> Move:
        """Move the project to ``target_host`` and return the finished move; raises MoveError
        (the move stays recorded as failed) or MoveInProgress (another move of it is active).

        A move to the same target that preflight refused is taken up again (with ``force`` as
        given) instead of starting another record."""
        project = self.store.get_project(project_id)
        if project.host_id is None:
            raise MoveRefused(f"project {project_id} has no placement to move from")
        if project.host_id == target_host:
            raise MoveRefused(f"project {project_id} is already on {target_host}")
        active = self.store.active_move(project_id)
        if (active is not None and active.status == MoveStatus.FAILED and active.step == "preflight"
                and active.target_host == target_host):
            return self.runner(active.id, observer=observer, before_step=before_step).retry(force=force)
        move = self.store.create_move(project_id, project.host_id, target_host, force=force)
        return self.runner(move.id, observer=observer, before_step=before_step).start()

    def resume(self, move_id: str, **hooks) -> Move:
        return self.runner(move_id, **hooks).resume()

    def retry(self, move_id: str, *, force: bool | None = None, **hooks) -> Move:
        return self.runner(move_id, **hooks).retry(force=force)

    def cancel(self, move_id: str, **hooks) -> Move:
        return self.runner(move_id, **hooks).cancel()

    def run_cleanups(self, observer: Observer | None = None) -> list[Move]:
        """Remove the source copies of completed moves whose cleanup is still pending; returns the
        moves still pending afterwards."""
        for move in self.store.pending_cleanups():
            clean_source(self.store, self.client, move, observer=observer)
        return self.store.pending_cleanups()


def _now() -> datetime:
    return datetime.now(timezone.utc)
