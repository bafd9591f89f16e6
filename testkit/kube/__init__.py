"""A Kubernetes cluster for tests: an emulated API server and a kubelet that runs pods locally.

No real API server runs on these machines (../shared/INFRA.md), so the
kubernetes backend is tested against these, through the official client over
real HTTP::

    from testkit import kube

    with kube.ApiServer() as api, kube.Kubelet(api, tmp_path) as kubelet:
        client = api.api_client()                       # or api.configuration()
        kubelet.plan(kube.OOMKilled(), labels={"c2d.dev/stage": "algorithm"})
        ...                                             # the backend runs jobs
        kube.count(api.calls(user_agent="c2d"))         # its API calls, by verb and resource

The modules, each with its own docstring:

server.py      ``ApiServer``: the emulator on a free local port, in its own thread;
               ``apply``, ``token_for`` (RBAC-checked clients), ``write_kubeconfig``,
               ``expire_watches`` (410 Gone on demand), ``calls``/``mark``/``count``
               (what was asked), ``run`` (a kmock reaction, on the emulator's loop).
emulator.py    ``KubernetesApiEmulator``: kmock's emulator with resourceVersions,
               selectors, resumable and expiring watches, timeouts, cascading
               deletion, graceful pod deletion, status subresources, PUT and
               the three patch formats, custom resources from CRDs, pods/log, RBAC.
kubelet.py     ``Kubelet``: watches pods, schedules them, runs them as local
               processes and reports their phases as a node does.
scenarios.py   What the kubelet plays instead of running a pod: ``Exit``,
               ``OOMKilled``, ``Waiting`` (``IMAGE_PULL_BACKOFF``...), ``Hang``,
               ``NodeLost``, ``Deleted``, ``Unschedulable``.
containers.py  The pod -> local process mapping (command, env, volumes, mounts).
manifests.py   deploy/ manifests: loaded, and validated as the suite requires.
selectors.py, patches.py, validation.py, rbac.py, logs.py
               The API server's rules, one concern each.

What the official client (37.x) does, seen here:

- ``watch.Watch().stream(..., deserialize=False)`` fails with
  ``KeyError('raw_object')`` on an ERROR event (a 410): keep the default and
  read ``event["raw_object"]``. With ``timeout_seconds`` it raises the 410 as
  an ``ApiException`` at once; without, it retries once from its last version.
- Typed methods check dict bodies with pydantic before sending: an unknown
  field never reaches the server. A dict PATCH on a built-in kind goes as a
  strategic merge patch, on a custom object as a merge patch.
- Answers that do not fit the declared model (a binding's Status, a
  delete that returns the object) read best with ``_preload_content=False``.
"""

from testkit.kube.kubelet import Kubelet
from testkit.kube.scenarios import (
    IMAGE_PULL_BACKOFF,
    Deleted,
    Exit,
    Hang,
    NodeLost,
    OOMKilled,
    Run,
    Scenario,
    Unschedulable,
    Waiting,
)
from testkit.kube.server import ApiCall, ApiServer, count

__all__ = [
    "IMAGE_PULL_BACKOFF",
    "ApiCall",
    "ApiServer",
    "Deleted",
    "Exit",
    "Hang",
    "Kubelet",
    "NodeLost",
    "OOMKilled",
    "Run",
    "Scenario",
    "Unschedulable",
    "Waiting",
    "count",
]
