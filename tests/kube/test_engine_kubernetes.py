"""The operator-engine on the kubernetes backend: a job's objects, its pods'
outcomes, stops and cleanup, against the emulated API server and test kubelet."""

from __future__ import annotations

import pytest

from testkit.kube import manifests
from tests.kube.engine_cluster import cluster, created_objects, k8s_engine
from tests.operator_engine.engine_harness import wait_until, workflow

pytestmark = pytest.mark.timeout(180)

WRITE_OUTPUT = """\
import json, os
print('hello from the pod')
did = json.loads(os.environ['DIDS'])[0]
data = open(os.path.join(os.environ['INPUTS'], did, '0')).read()
open(os.path.join(os.environ['OUTPUTS'], 'result.txt'), 'w').write(data.upper())
"""


async def test_a_job_reaches_70_with_valid_objects_and_leaves_nothing(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow(WRITE_OUTPUT))
            changes = await engine.history(job_id)
            assert [ch.status for ch in changes] == [10, 20, 30, 40, 60, 70], changes[-1]
            schemas = manifests.custom_schemas()
            made = created_objects(c)
            kinds = sorted(obj["kind"] for obj in made)
            assert kinds == sorted(
                ["ComputeJob", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Pod", "Pod", "Pod"]
            )
            for obj in made:
                manifests.validate(obj, schemas)
            assert "result.txt" in [f.path for f in changes[-1].results.files]
            log = (engine.data(job_id) / "logs" / "algorithm.log").read_text()
            assert "hello from the pod" in log
            await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")
