"""testkit.pg_proxy as the fault trials use it: in front of a server that is
down (PostgreSQL restarting) it refuses the client at once instead of leaving
it waiting for a start-up answer that never comes; a disarmed proxy cuts no
more COMMITs; each cut names the statement its COMMIT followed."""

from __future__ import annotations

import psycopg2
import pytest

from testkit.pg_proxy import commit_reply_cutter
from testkit.servers import free_ports


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def test_a_client_of_a_server_that_is_down_is_refused_not_left_waiting() -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_ports(1)[0]}/postgres"  # nothing listens there
    with commit_reply_cutter(down) as proxy, pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(proxy.url(down), connect_timeout=20)

    # the proxy closed the connection; a client left waiting would give up at its timeout instead
    assert "timeout expired" not in str(refused.value)
    assert "closed the connection unexpectedly" in str(refused.value)


def test_a_disarmed_proxy_cuts_no_more_and_says_what_each_cut_commit_followed(postgres_url: str) -> None:
    with commit_reply_cutter(postgres_url) as proxy:
        proxy.arm(2)
        first = psycopg2.connect(_dsn(proxy.url(postgres_url)))
        with first.cursor() as cur:
            cur.execute("CREATE TABLE marks (n int)")
        with pytest.raises(psycopg2.OperationalError):
            first.commit()  # landed, but the reply was cut
        assert proxy.disarm() == 1

        second = psycopg2.connect(_dsn(proxy.url(postgres_url)))
        with second.cursor() as cur:
            cur.execute("INSERT INTO marks VALUES (1)")  # the table is there: the cut COMMIT landed
        second.commit()
        second.close()

    assert (proxy.commits, proxy.cut) == (2, 1)
    assert proxy.cut_after == ["CREATE TABLE marks (n int)"]
