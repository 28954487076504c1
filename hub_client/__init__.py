"""buckets hub client: call agents and orchestrate multi-host work.

The generated gRPC code lives in :mod:`hub_client.proto` and needs only
grpcio and protobuf.
"""
