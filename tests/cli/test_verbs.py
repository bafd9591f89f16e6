"""Every verb of the `c2d` command against a real `c2d up`, through the real command, --json checked."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from plumbing.ethereum import Account
from tests.cli.conftest import Cli

CSV = "city,temperature\nOslo,4.5\nLisbon,18.25\nNairobi,21.0\n"
COUNT = """\
import csv, json, os
rows = []
for did in json.loads(os.environ["DIDS"]):
    with open(os.path.join(os.environ["INPUTS"], did, "0"), newline="") as f:
        rows += list(csv.DictReader(f))
with open(os.path.join(os.environ["INPUTS"], "algoCustomData.json")) as f:
    parameters = json.load(f)
with open(os.path.join(os.environ["OUTPUTS"], "result.json"), "w") as f:
    json.dump({"rows": len(rows), "parameters": parameters}, f, sort_keys=True)
print("counted", len(rows), "rows")
"""
FAIL = 'print("giving up on purpose")\nraise SystemExit(3)\n'
SLOW = 'import time\nprint("started", flush=True)\ntime.sleep(120)\n'
IMAGE_DIGEST = "sha256:" + "ab" * 32
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


PARAMETERS = [
    {"name": "greeting", "type": "text", "label": "Greeting", "required": False, "default": "hello"},
    {"name": "limit", "type": "number", "label": "Limit", "required": False, "default": 10},
]


def write_algorithm(cwd: Path, name: str, code: str) -> Path:
    (cwd / f"{name}.py").write_text(code)
    description = {
        "type": "algorithm",
        "name": f"{name} algorithm",
        "files": [f"{name}.py"],
        "container": {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": IMAGE_DIGEST},
        "parameters": PARAMETERS,
    }
    path = cwd / f"{name}.json"
    path.write_text(json.dumps(description))  # JSON is YAML too: both forms are read
    return path


@pytest.fixture(scope="module")
def assets(cli: Cli) -> dict[str, str]:
    """An account, three algorithms and a dataset that trusts them, each with datatokens minted to it."""
    assert cli("account", "new").returncode == 0
    dids = {}
    for name, code in (("count", COUNT), ("fail", FAIL), ("slow", SLOW)):
        dids[name] = cli.json("asset", "publish", str(write_algorithm(cli.cwd, name, code)))["did"]
    (cli.cwd / "weather.csv").write_text(CSV)
    (cli.cwd / "dataset.yaml").write_text(
        "type: dataset\nname: City temperatures\nlicense: CC0\nfiles: [weather.csv]\n"
    )
    trusts = [arg for name in ("count", "fail", "slow") for arg in ("--trust", dids[name])]
    dids["dataset"] = cli.json("asset", "publish", "dataset.yaml", *trusts)["did"]
    for did in dids.values():
        assert cli.json("ledger", "mint", did, "--amount", "5")["balance"] == 5
    return dids


def test_version_names_the_cli_and_the_sdk(cli: Cli):
    answer = cli("--version")
    assert answer.returncode == 0
    assert re.fullmatch(r"c2d \d+\.\d+\.\d+ \(c2d-sdk \d+\.\d+\.\d+\)\n", answer.stdout)


def test_account_lives_in_the_config_directory_not_the_cwd(cli: Cli, assets):
    shown = cli.json("account", "show")
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", shown["address"])
    key_file = Path(shown["key_file"])
    assert key_file == Path(cli.env["XDG_CONFIG_HOME"]) / "c2d" / "account.key"
    assert key_file.stat().st_mode & 0o077 == 0  # only its owner reads it
    assert not any(cli.cwd.glob("*.key"))

    again = cli("account", "new")
    assert again.returncode == 2 and "--force" in again.stderr  # an account is never replaced by mistake
    assert cli.json("account", "show") == shown

    # import: the same key from stdin is the same account; a malformed one is a usage error
    assert cli.json("account", "import", "-", input=key_file.read_text())["address"] == shown["address"]
    bad = cli("account", "import", "-", input="not a key")
    assert bad.returncode == 2 and "64 hex digits" in bad.stderr


def test_account_import_reads_a_key_file(cli: Cli, tmp_path):
    other = Cli({**cli.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}, cli.cwd)
    key = tmp_path / "key.txt"
    key.write_text("0x" + "42" * 32 + "\n")
    imported = other.json("account", "import", str(key))
    assert imported["address"] == Account.from_key("0x" + "42" * 32).address  # eth-account agrees
    assert other.json("account", "show") == imported


def test_publish_prints_the_did_and_the_algorithm_checksums(cli: Cli, assets):
    published = cli.json("asset", "publish", str(write_algorithm(cli.cwd, "again", COUNT)))
    assert set(published) == {"did", "type", "service_id", "datatoken", "files_checksum", "container_checksum"}
    assert published["type"] == "algorithm" and published["service_id"] == "access"
    # filesChecksum: sha256 of the files' sha256 hex, concatenated
    assert (
        published["files_checksum"] == hashlib.sha256(hashlib.sha256(COUNT.encode()).hexdigest().encode()).hexdigest()
    )
    quiet = cli("asset", "publish", str(cli.cwd / "again.json"), "-q")
    assert quiet.returncode == 0 and re.fullmatch(r"did:op:[0-9a-f]{64}\n", quiet.stdout)


def test_asset_get_shows_the_ddo_with_its_files_sealed(cli: Cli, assets):
    asset = cli.json("asset", "get", assets["dataset"])
    assert asset["did"] == assets["dataset"] and asset["type"] == "dataset"
    assert asset["owner"] == cli.json("account", "show")["address"]
    service = asset["ddo"]["services"][0]
    assert service["files"].startswith("0x") and "Oslo" not in json.dumps(asset)
    trusted = {t["did"] for t in service["compute"]["publisherTrustedAlgorithms"]}
    assert trusted == {assets["count"], assets["fail"], assets["slow"]}


def test_asset_ls_filters_by_type(cli: Cli, assets):
    listed = cli.json("asset", "ls", "--type", "dataset")["assets"]
    assert assets["dataset"] in {a["did"] for a in listed}
    assert {a["type"] for a in listed} == {"dataset"}
    assert set(listed[0]) == {"did", "name", "type", "owner"}


def test_ledger_balance_of_you_and_of_another_address(cli: Cli, assets):
    mine = cli.json("ledger", "balance", assets["dataset"])
    assert mine["balance"] >= 1 and mine["service_id"] == "compute"
    nobody = cli.json("ledger", "balance", assets["dataset"], "--address", "0x" + "00" * 20)
    assert nobody["balance"] == 0


def test_env_ls(cli: Cli):
    environments = cli.json("env", "ls")["environments"]
    assert environments and environments[0]["id"] == "local-cpu" and environments[0]["available"] is True
    assert isinstance(environments[0]["memory_bytes"], int)


def test_a_job_from_start_to_result(cli: Cli, assets, tmp_path):
    started = cli(
        "compute", "start", "--dataset", assets["dataset"], "--algorithm", assets["count"],
        "--param", "greeting=hi", "--param", "limit=3", "--wait", "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    states = [json.loads(line) for line in started.stdout.splitlines()]
    assert [s["status"] for s in states][-1] == 70 and states[-1]["end_reason"] == "completed"
    assert [s["status"] for s in states] == sorted(s["status"] for s in states)  # one line per status, in order
    job_id = states[-1]["job_id"]
    assert UUID.fullmatch(job_id)

    status = cli.json("compute", "status", job_id)
    assert status["status"] == 70 and status["dataset_dids"] == [assets["dataset"]]
    assert {f["path"]: f["kind"] for f in status["results"]} == {"result.json": "output", "algorithm.log": "log"}

    logs = cli("compute", "logs", job_id)
    assert logs.returncode == 0 and logs.stdout == "counted 3 rows\n"

    saved = cli.json("compute", "result", job_id, "-o", str(tmp_path / "out"))
    files = {f["path"]: f for f in saved["files"]}
    result = Path(files["result.json"]["saved_to"])
    assert result.parent == tmp_path / "out"
    assert json.loads(result.read_text()) == {"rows": 3, "parameters": {"greeting": "hi", "limit": 3}}
    assert hashlib.sha256(result.read_bytes()).hexdigest() == files["result.json"]["sha256"]
    assert Path(files["algorithm.log"]["saved_to"]).read_text() == "counted 3 rows\n"

    watched = cli("compute", "watch", job_id, "--json")  # an ended job: its last state, exit 0
    assert watched.returncode == 0 and json.loads(watched.stdout.splitlines()[-1])["status"] == 70

    assert job_id in {j["job_id"] for j in cli.json("jobs", "ls", "--status", "70")["jobs"]}
    assert job_id not in {j["job_id"] for j in cli.json("jobs", "ls", "--status", "41")["jobs"]}

    assert cli.json("compute", "delete", job_id) == {"job_id": job_id, "deleted": True}
    gone = cli("compute", "status", job_id)
    assert gone.returncode == 2 and "JOB_NOT_FOUND" in gone.stderr


def test_start_orders_only_what_has_no_valid_order(cli: Cli, assets):
    before = cli.json("ledger", "balance", assets["dataset"])["balance"]
    job = cli.json("compute", "start", "--dataset", assets["dataset"], "--algorithm", assets["count"])
    assert UUID.fullmatch(job["job_id"]) and job["status"] in (1, 10, 20, 30, 40, 60, 70)
    assert cli.json("ledger", "balance", assets["dataset"])["balance"] == before - 1  # one order, one datatoken
    assert cli("compute", "watch", job["job_id"]).returncode == 0


def test_a_failed_job_exits_1_with_its_reason(cli: Cli, assets):
    answer = cli("compute", "start", "--dataset", assets["dataset"], "--algorithm", assets["fail"], "--wait")
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert "status 41" in answer.stdout
    job_id = UUID.search(answer.stdout).group(0)
    assert cli("compute", "watch", job_id).returncode == 1
    assert cli("compute", "logs", job_id).stdout == "giving up on purpose\n"
    assert job_id in {j["job_id"] for j in cli.json("jobs", "ls", "--status", "41")["jobs"]}


def test_stop_a_running_job_and_follow_its_log(cli: Cli, assets):
    job_id = cli("compute", "start", "--dataset", assets["dataset"], "--algorithm", assets["slow"], "-q").stdout.strip()
    deadline = time.monotonic() + 60
    # Its log, not status 40: the engine reports 40 before it starts the algorithm.
    while cli("compute", "logs", job_id).stdout != "started\n":
        assert time.monotonic() < deadline, "the slow algorithm never ran"
        time.sleep(0.5)
    stopped = cli.json("compute", "stop", job_id)
    assert stopped["job_id"] == job_id
    follow = cli("compute", "logs", job_id, "-f", "--json")  # follows until the job ends
    assert follow.returncode == 0
    assert "".join(json.loads(line)["text"] for line in follow.stdout.splitlines()) == "started\n"
    ended = cli.json("compute", "status", job_id)
    assert ended["end_reason"] == "stopped"


def test_usage_errors_exit_2_and_say_what_to_do(cli: Cli, assets, tmp_path):
    missing = cli("compute", "start", "--dataset", assets["dataset"])
    assert missing.returncode == 2 and "--algorithm" in missing.stderr
    bad_did = cli("compute", "start", "--dataset", "did:op:nope", "--algorithm", assets["count"])
    assert bad_did.returncode == 2 and "did:op:" in bad_did.stderr
    assert cli("asset", "publish", "no-such-file.yaml").returncode == 2
    (tmp_path / "broken.yaml").write_text("type: dataset\nname: x\nfiles: []\n")
    broken = cli("asset", "publish", str(tmp_path / "broken.yaml"))
    assert broken.returncode == 2 and "files" in broken.stderr
    assert cli("jobs", "ls", "--status", "5").returncode == 2
    no_account = Cli({**cli.env, "XDG_CONFIG_HOME": str(tmp_path / "nobody")}, cli.cwd)("jobs", "ls")
    assert no_account.returncode == 2 and "c2d account new" in no_account.stderr
    for answer in (missing, bad_did, broken, no_account):
        assert "Traceback" not in answer.stderr + answer.stdout


def test_a_provider_that_is_not_there_exits_3(cli: Cli):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    answer = cli("--provider", closed, "env", "ls")
    assert answer.returncode == 3
    assert "unreachable" in answer.stderr and "c2d up" in answer.stderr and "Traceback" not in answer.stderr


def test_another_accounts_job_is_refused_with_exit_1(cli: Cli, assets, tmp_path):
    job_id = cli.json("jobs", "ls", "--status", "70")["jobs"][0]["job_id"]
    stranger = Cli({**cli.env, "XDG_CONFIG_HOME": str(tmp_path / "stranger")}, cli.cwd)
    stranger("account", "new")
    refused = stranger("compute", "result", job_id, "-o", str(tmp_path / uuid.uuid4().hex))
    assert refused.returncode in (1, 2), refused.stderr
    assert "refused" in refused.stderr and "Traceback" not in refused.stderr


def test_a_result_changed_after_signing_is_not_saved_and_exits_1(cli: Cli, assets, up, tmp_path):
    started = cli("compute", "start", "--dataset", assets["dataset"], "--algorithm", assets["count"], "--wait", "-q")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    stored = up.home / "data" / "c2d" / "results" / job_id / "outputs" / "result.json"
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"3", b"4"))  # same size, other bytes: only the sha256 can tell
    answer = cli("compute", "result", job_id, "-o", str(tmp_path / "out"))
    assert answer.returncode == 1
    assert "not the signed" in answer.stderr and "Traceback" not in answer.stderr
    assert not (tmp_path / "out" / "result.json").exists()
    assert not list((tmp_path / "out").glob("*.part"))
