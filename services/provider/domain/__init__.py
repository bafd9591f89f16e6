"""The provider's pure domain layer.

Rules the provider enforces, written as plain functions over plain data:
request signatures and nonces (identity), sealing of file locations and
result-manifest signatures (sealing), the DDO v4 shape, DIDs and checksums
(ddos), and the compute policy of a dataset (policy). Every refusal is a
``Refusal`` with a stable code (errors).

Nothing here does I/O, talks gRPC or touches a database: servers and stores
call into this layer, never the other way round, so every rule can be tested
with values alone.
"""
