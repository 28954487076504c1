"""A hub over real agents for the integration tests: quick client settings and registration."""

from __future__ import annotations

from hub_client.client import ClientConfig, RetryPolicy
from hub_client.hub import Hub


def client_config(address: str) -> ClientConfig:
    # Few, quick retries: a stopped agent should fail the step within seconds, not minutes.
    return ClientConfig(target=address, deadline=30.0, retry=RetryPolicy(attempts=3, initial_backoff=0.1,
                                                                          max_backoff=0.5),
                        reconnect_attempts=3)


def make_hub(store, two_hosts) -> Hub:
    """A hub on ``store`` with the two agents registered as host-a and host-b of region eu."""
    hub = Hub(store, client_config=client_config)
    for agent, name in zip(two_hosts, ("host-a", "host-b")):
        register(hub, name, agent)
    return hub


def register(hub: Hub, name: str, agent) -> None:
    hub.add_host(name, f"127.0.0.1:{agent.port}", "eu")
    hub.probe_host(name)


def host_pair(agent_factory, extra: str):
    """Agents "host-a" and "host-b" with one repository configuration (``extra``), as the hosts
    of one region share a bucket."""
    return (agent_factory("host-a", extra=extra, host_id="host-a"),
            agent_factory("host-b", extra=extra, host_id="host-b"))
