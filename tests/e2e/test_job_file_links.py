"""An algorithm cannot make c2d read a host file for it through a link it planted.

The attack (issue 13, item 1): the algorithm replaces /data/logs/algorithm.log
with a symlink to /etc/shadow or to the service token in the data directory,
then its consumer calls StreamJobLogs and GetComputeResult. Neither may
stream the target: the engine writes algorithm.log itself, out of the
algorithm's reach, and every job file is opened without following links.
"""

from __future__ import annotations

import pytest

from plumbing import settings
from testkit.jobs import job_bench

ALGORITHM = """
import os
print("hello from the algorithm", flush=True)
log = "/data/logs/algorithm.log"
if os.path.lexists(log):
    os.remove(log)
os.symlink({target!r}, log)
# and a second try at the result files: a link among the outputs
os.symlink({target!r}, "/data/outputs/stolen.txt")
open("/data/outputs/result.txt", "w").write("42")
"""


@pytest.mark.parametrize("target", ["shadow", "service-token"])
async def test_a_log_replaced_by_a_link_streams_only_what_the_algorithm_printed(data_dir, target):
    async with job_bench() as bench:
        path = "/etc/shadow" if target == "shadow" else str(settings.data_dir() / "service-token")
        with open(path, "rb") as f:
            secret = f.read().strip()
        assert secret, f"{path} must hold something to steal"
        job = await bench.run(ALGORITHM.format(target=path))
        assert job.status == 70, job.error_message

        logs = b"".join([chunk async for chunk in bench.consumer.logs(job.job_id)])
        assert logs == b"hello from the algorithm\n"

        files = {f.path: f for f in job.results.files}
        assert set(files) == {"result.txt", "algorithm.log"}
        assert list(job.results.skipped_paths) == ["stolen.txt"]
        for name, entry in files.items():
            _, data = await bench.consumer.result(job.job_id, entry.index)
            assert secret not in data, name
        _, published_log = await bench.consumer.result(job.job_id, files["algorithm.log"].index)
        assert published_log == b"hello from the algorithm\n"
