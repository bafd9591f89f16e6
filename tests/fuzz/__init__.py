"""The fuzzer: hypothesis-generated requests for every RPC of every service,
sent over real gRPC to a running stack (see harness.py)."""
