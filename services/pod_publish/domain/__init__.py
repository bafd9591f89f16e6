"""pod_publish's domain: what a job's results are, and publishing them all or nothing.

It uploads through plumbing.storage's ObjectStore and registers a results
asset through the `Registrar` port it defines; it never speaks gRPC itself
(clients/ does, program.py wires them together).
"""
