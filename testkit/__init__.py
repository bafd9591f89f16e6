"""The test kit: real servers and emulated infrastructure that the tests and benchmarks run against.

- ``testkit.servers``: SeaweedFS (S3) and the IPFS node as child processes,
  free ports, process checks; ``testkit.kubo_rpc`` is the IPFS node's HTTP front.
- ``testkit.stacks``: the c2d stack in-process, fresh PostgreSQL databases.
- ``testkit.fixtures``: the pytest fixtures over both (a plugin).
- ``testkit.market`` (the provider with publisher and consumers),
  ``testkit.control_plane`` (engine and operator-services), ``testkit.jobs``
  (real jobs on a storage): the harnesses the tests and bench/ share;
  ``testkit.raw_rows``: a PostgreSQL database read raw.
- ``testkit.kube``: a Kubernetes API server and a kubelet; it imports no
  service: what it emulates is what a service talks to.

Nothing here imports ``tests``, and no service imports the test kit
(import-linter contracts in pyproject.toml).
"""
