"""The test kit: real servers and emulated infrastructure that the tests and benchmarks run against.

Each subpackage is one piece of infrastructure (``testkit.kube``: a Kubernetes
API server and a kubelet). It imports no service: what it emulates is what a
service talks to.
"""
