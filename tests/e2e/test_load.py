"""Load, CI-sized (issue 19; bench/pressure.py --only load runs 2000 jobs): 200 jobs
submitted at once by 20 consumers through the provider of `c2d up --processes`,
20 WatchJob streams open; every job completes, every watcher sees every
transition of its job in order, and no server holds more file descriptors
after than before (once settled, after a warm-up batch)."""

from __future__ import annotations

from pathlib import Path

from testkit.load import LOCAL_PATH, run_load

RSS_GROWTH_LIMIT_MIB = 64.0  # loose: the allocator keeps what it grew to; a leak per job would pass it


async def test_200_jobs_from_20_clients_all_complete_watched_in_order_with_flat_fds(tmp_path: Path, postgres_url):
    result = await run_load(
        tmp_path / "c2d", postgres_url, jobs=200, clients=20, watchers=20, warmup=20, timeout_s=900.0
    )

    assert result.submitted == 200
    assert result.failed == {}, result.server_errors[:3]
    assert result.completed == 200
    assert len(result.watched) == 20
    for watched in result.watched:
        assert not watched.error, watched.error
        assert [status for _, status in watched.updates] == LOCAL_PATH, watched
        sequences = [sequence for sequence, _ in watched.updates]
        assert sequences == sorted(set(sequences)), watched
    assert {name: u.fds for name, u in result.after.items()} == {name: u.fds for name, u in result.before.items()}
    assert result.rss_growth_mib() < RSS_GROWTH_LIMIT_MIB, (result.before, result.after)
