"""A Kubernetes cluster for tests (in progress): the checks of deploy/'s manifests.

manifests.py   deploy/ manifests: loaded, and validated as the suite requires.
validation.py, rbac.py
               The API server's rules for objects and for who may do what.
"""
