"""``buckets-hub serve``: the hub as a gRPC service (``buckets.v1.Hub``) over :class:`hub_client.hub.Hub`.

Modules: :mod:`.config` (the hub config file), :mod:`.status_codes` (hub exceptions → gRPC
codes, the one place), :mod:`.convert` (store rows ↔ messages, pure), :mod:`.domain` (what
each call does, on the Hub), :mod:`.runner` (moves and copies run in background threads),
:mod:`.logs` (following a movelog / copylog), :mod:`.freshness` (polling agents on a
schedule), :mod:`.servicer` (thin gRPC layer), :mod:`.server` (the process).
"""
