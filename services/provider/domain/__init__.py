"""The provider's pure domain layer.

Rules the provider enforces, written as plain functions over plain data:
request signatures and nonces (identity, signed_requests), sealing of file
locations and result-manifest signatures (sealing), the DDO v4 shape and DIDs
(ddos; the DID syntax and the checksums are plumbing/assets.py's, shared with
pod_config), the compute policy of a dataset (policy), the plan of a compute
request (compute_plan), which locations a sealed file list may name, a
publisher's or a results location the provider issued (file_locations), and
results as an asset (results_assets, results_grants). Every refusal is a
``Refusal`` with a stable code (errors) or a plumbing.errors class.

Nothing here talks gRPC or touches a database: where a rule needs the
published assets, the environments or the nonces, it defines a small
Protocol (a port) that persistence/ or clients/ implements and server.py
wires in, so every rule can be tested with values alone.
"""
