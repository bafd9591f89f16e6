"""Network-allowed job egress: a job whose dataset allows the network attacks ours.

The attack (issue 13, item 4): when the dataset allows network access, the
algorithm connects to the provider, operator-service and engine ports, to
PostgreSQL on 5432, to any loopback service, to private ranges and to the
metadata address 169.254.169.254, or reads and changes its own rules.

The guarantee (DESIGN.md "Who may see what"): a network-allowed job gets a
network of its own: it reaches the public internet and nothing of ours. Real bubblewrap, real
namespaces, real slirp4netns and nftables, the real stack's ports and PostgreSQL.

No internet here: the public server, and the private and metadata ones, are test hosts
in a network namespace this module makes (a veth routed from the host), so no packet of
these tests ever leaves the machine. Every refusal is asserted from the algorithm's own
report, against a target the test first reaches itself from the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.stack import start_stack
from plumbing import errors
from plumbing.statuses import EndReason, Status
from services.operator_engine.backends.local import network
from services.operator_engine.backends.local.backend import LocalBackend
from services.operator_engine.backends.local.sandbox import SandboxLimits, SandboxRun, detect_capabilities
from testkit.stacks import settings_for
from tests.operator_engine.engine_harness import EngineClient, workflow
from tests.operator_engine.helpers import Job, engines_that_die, make_job, processes_of, py, run_to_end, wait_for

POSTGRES_PORT = 5432
TEST_HOSTS = {
    "public": "198.51.100.10",  # TEST-NET-2: stands in for any public address
    "rfc1918": "10.213.0.10",
    "rfc6598": "100.64.213.10",
    "metadata": "169.254.169.254",
}
TEST_HOST_PORT = 80
# the host's tools, seen at the same paths inside the sandbox (/usr is bound)
NFT = shutil.which("nft", path="/usr/sbin:/sbin")
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
REFUSED_ERRNOS = {"EHOSTUNREACH", "ENETUNREACH", "ECONNREFUSED"}

# --- the test hosts ------------------------------------------------------------------

# Answers each TCP connection and UDP datagram with "hello from <its address>", and logs
# "<proto> <its address>" for each (the log says what reached it).
TEST_HOST_SERVER = r"""
import selectors, socket, sys
log = open(sys.argv[1], "a", buffering=1)
selector = selectors.DefaultSelector()
for address in sys.argv[2:]:
    tcp = socket.socket()
    tcp.bind((address, 80))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, 80))
    selector.register(tcp, selectors.EVENT_READ, ("tcp", address))
    selector.register(udp, selectors.EVENT_READ, ("udp", address))
print("ready", flush=True)
while True:
    for key, _ in selector.select():
        proto, address = key.data
        log.write(f"{proto} {address}\n")
        if proto == "tcp":
            conn, _ = key.fileobj.accept()
            conn.sendall(f"hello from {address}\n".encode())
            conn.close()
        else:
            _, peer = key.fileobj.recvfrom(2048)
            key.fileobj.sendto(f"hello from {address}\n".encode(), peer)
"""


@dataclass(frozen=True)
class StandInHosts:
    log: Path

    def reached(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def stand_in_hosts(tmp_path_factory) -> Iterator[StandInHosts]:  # type: ignore[no-untyped-def]
    name = f"c2dt{os.getpid()}"
    host_end, far_end = f"{name}h", f"{name}n"
    log = tmp_path_factory.mktemp("test-hosts") / "reached.log"
    server = None
    try:
        ip("netns", "add", name)
        ip("link", "add", host_end, "type", "veth", "peer", "name", far_end, "netns", name)
        ip("link", "set", host_end, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "set", far_end, "up")
        for address in TEST_HOSTS.values():
            ip("-n", name, "address", "add", f"{address}/32", "dev", far_end)
            ip("route", "add", f"{address}/32", "dev", host_end)
        ip("-n", name, "route", "add", "default", "dev", far_end)
        for address in TEST_HOSTS.values():  # into that namespace: never out of this machine
            assert json.loads(ip("-j", "route", "get", address))[0]["dev"] == host_end
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", TEST_HOST_SERVER, str(log), *TEST_HOSTS.values()],
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        for address in TEST_HOSTS.values():  # each answers the host
            with socket.create_connection((address, TEST_HOST_PORT), timeout=5) as conn:
                assert conn.recv(64) == f"hello from {address}\n".encode()
        yield StandInHosts(log)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --- what the algorithm tries ---------------------------------------------------------

# report(tcp={label: outcome}, udp={label: outcome}) for the targets in TARGETS.
ATTEMPTS = """
    import errno, json, socket
    targets = json.loads(TARGETS)

    def failure(e):
        return errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__

    def tcp(host, port):
        try:
            with socket.create_connection((host, port), timeout=5) as conn:
                if port != 80:
                    return "connected"
                conn.settimeout(5)
                return "connected: " + conn.recv(64).decode().strip()
        except OSError as e:
            return failure(e)

    def udp(host, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            try:
                s.connect((host, port))
                s.send(b"hello?")
                return "answered: " + s.recv(64).decode().strip()
            except OSError as e:
                return failure(e)

    report(tcp={label: tcp(host, port) for label, (host, port) in targets.get("tcp", {}).items()},
           udp={label: udp(host, port) for label, (host, port) in targets.get("udp", {}).items()})
"""


def attempts(tcp: dict[str, tuple[str, int]], udp: dict[str, tuple[str, int]] | None = None) -> str:
    return py(f"TARGETS = {json.dumps(json.dumps({'tcp': tcp, 'udp': udp or {}}))}\n" + textwrap.dedent(ATTEMPTS))


def reachable_from_here(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def host_addresses_from_ip() -> list[str]:
    """The host's own addresses on every interface but loopback, as `ip` lists them
    (link-local ones need an interface the job does not have, so they are left out)."""
    found = []
    for link in json.loads(ip("-j", "address", "show")):
        for info in link.get("addr_info", []):
            if link["ifname"] != "lo" and info.get("scope") == "global":
                found.append(info["local"])
    return found


@contextlib.contextmanager
def listening_on_ipv6_loopback(port: int) -> Iterator[None]:
    """[::1]:port answers: PostgreSQL's own listener when it has one there, else a stand-in."""
    stand_in = socket.socket(socket.AF_INET6)
    try:
        stand_in.bind(("::1", port))
        stand_in.listen(8)
    except OSError:
        stand_in.close()  # taken: PostgreSQL (or another local service) is there
    try:
        yield
    finally:
        stand_in.close()


def refused(outcome: str) -> bool:
    return outcome in REFUSED_ERRNOS


# --- refusals through the real stack ---------------------------------------------------


async def test_a_network_allowed_job_reaches_no_port_of_the_host(data_dir, postgres_url, tmp_path):
    """c2d's three servers (listening on every address, IPv4 and IPv6) and PostgreSQL,
    on 127.0.0.1, on ::1 and on each of the host's own addresses: all refused."""
    workspaces = tmp_path / "ws"
    provider, operator, engine = settings_for(postgres_url, workspaces_dir=str(workspaces))
    everywhere = "[::]:0"
    stack = await start_stack(
        dataclasses.replace(provider, address=everywhere),
        dataclasses.replace(operator, address=everywhere),
        dataclasses.replace(engine, address=everywhere),
    )
    client = EngineClient(f"127.0.0.1:{stack.engine.port}", workspaces)
    try:
        ports = {
            "provider": stack.provider.port,
            "operator-service": stack.operator.port,
            "engine": stack.engine.port,
            "postgresql": POSTGRES_PORT,
        }
        targets = {}
        for name, port in ports.items():
            targets[f"{name} on 127.0.0.1"] = ("127.0.0.1", port)
            targets[f"{name} on ::1"] = ("::1", port)
        own = host_addresses_from_ip()
        assert own, "the host has no address besides loopback"
        for address in own:
            targets[f"engine on the host's {address}"] = (address, stack.engine.port)
        with listening_on_ipv6_loopback(POSTGRES_PORT):
            for label, (host, port) in targets.items():
                assert reachable_from_here(host, port), f"{label}: nothing answers the host there"
            job_id = await client.submit(workflow(attempts(targets), allow_network=True))
            ended = await client.ended(job_id)
        assert ended.status == Status.FINISHED and ended.end_reason == EndReason.COMPLETED, ended
        outcomes = json.loads((client.data(job_id) / "outputs" / "report.json").read_text())["tcp"]
        assert set(outcomes) == set(targets)
        reached = {label: o for label, o in outcomes.items() if not refused(o)}
        assert not reached, f"reached from the job: {json.dumps(reached, indent=1)}"
    finally:
        await client.close()
        await stack.stop()


# --- refusals and the one allowed destination, in the sandbox ---------------------------


async def test_private_and_metadata_servers_are_refused_and_a_public_one_answers(tmp_path, stand_in_hosts):
    targets = {label: (address, TEST_HOST_PORT) for label, address in TEST_HOSTS.items()}
    job = make_job(tmp_path, attempts(targets, udp=targets))
    before = len(stand_in_hosts.reached())
    run, outcome = await run_to_end(job, allow_network=True)
    assert outcome.exit_code == 0, job.log.read_text()
    r = job.report()
    for label in ("rfc1918", "rfc6598", "metadata"):
        # refused by the namespace's rules: TCP by an ICMP "prohibited", UDP already at send()
        assert (r["tcp"][label], r["udp"][label]) == ("EHOSTUNREACH", "EPERM"), (label, r)
    public = TEST_HOSTS["public"]
    assert stand_in_hosts.reached()[before:] == [f"tcp {public}", f"udp {public}"]  # nothing else got there
    assert r["tcp"]["public"] == f"connected: hello from {public}"
    assert r["udp"]["public"] == f"answered: hello from {public}"
    assert "net:own" in run.limits_in_force


async def test_the_gateway_does_not_lead_to_the_host_and_the_job_keeps_its_own_loopback(tmp_path):
    with socket.socket() as on_host_loopback:
        on_host_loopback.bind(("127.0.0.1", 0))
        on_host_loopback.listen(8)
        port = on_host_loopback.getsockname()[1]
        job = make_job(
            tmp_path,
            py(f"""
            import socket, subprocess
            own = socket.socket()
            own.bind(("127.0.0.1", {port}))
            own.listen(1)
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            report(own_loopback="connected")
            try:
                socket.create_connection(("10.0.2.2", {port}), timeout=5).close()
                report(gateway="connected")
            except OSError as e:
                report(gateway=e.errno)
            report(interfaces=sorted(name for _, name in socket.if_nameindex()),
                   routes=subprocess.run(["{IP}", "route"], capture_output=True, text=True).stdout)
        """),
        )
        _, outcome = await run_to_end(job, allow_network=True)
        assert outcome.exit_code == 0, job.log.read_text()
        r = job.report()
        assert r["own_loopback"] == "connected"
        assert r["gateway"] == 113  # EHOSTUNREACH: the gateway (slirp4netns's map of the host) is refused
        assert r["interfaces"] == ["lo", network.TAP_DEVICE]
        assert r["routes"].startswith("default via 10.0.2.2 dev tap0")
        on_host_loopback.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing reached the host's listener
            on_host_loopback.accept()


def host_resolver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver"):
            return line.split()[1]
    raise AssertionError("the host has no resolver")


def resolve_here(name: str) -> str:
    try:
        socket.getaddrinfo(name, 80)
        return "resolved"
    except socket.gaierror as e:
        return f"gaierror {e.errno}"


async def test_dns_goes_through_slirp4netns_to_the_hosts_resolver_and_never_to_it_directly(tmp_path):
    name = "c2d-job-network.invalid"  # .invalid never resolves: one quick answer, no internet needed
    resolver = host_resolver()
    job = make_job(
        tmp_path,
        py(f"""
        import socket
        try:
            socket.getaddrinfo({name!r}, 80)
            report(resolved="resolved")
        except socket.gaierror as e:
            report(resolved=f"gaierror {{e.errno}}")
        qname = b"".join(bytes([len(label)]) + label.encode() for label in {name!r}.split(".")) + b"\\0"
        query = bytes.fromhex("c2d101000001000000000000") + qname + bytes.fromhex("00010001")  # A, IN
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            try:
                s.connect(({resolver!r}, 53))
                s.send(query)
                s.recv(512)
                report(direct="answered")
            except OSError as e:
                report(direct=e.errno)
        report(resolv_conf=open("/etc/resolv.conf").read(), hosts=open("/etc/hosts").read())
    """),
    )
    _, outcome = await run_to_end(job, allow_network=True)
    assert outcome.exit_code == 0, job.log.read_text()
    r = job.report()
    if resolver.startswith("127."):
        assert r["direct"] == 111  # the job's own loopback: nothing there
    else:
        assert r["direct"] == 1  # EPERM: refused by the rules at send()
    assert r["resolv_conf"] == f"nameserver {network.DNS_FORWARDER}\n"
    assert r["hosts"] == network.HOSTS  # none of the host's own names
    # the forwarder's answer is the host's: an unreachable resolver would be EAI_AGAIN (-3) instead
    assert r["resolved"] == resolve_here(name)


async def test_the_job_can_neither_read_nor_change_its_rules_or_its_interface(tmp_path, stand_in_hosts):
    private = TEST_HOSTS["rfc1918"]
    job = make_job(
        tmp_path,
        py(f"""
        import socket, subprocess
        def attempt(*argv):
            done = subprocess.run(argv, capture_output=True, text=True)
            return done.returncode, done.stderr.strip()[-200:]
        report(list_rules=attempt("{NFT}", "list", "ruleset"),
               flush_rules=attempt("{NFT}", "flush", "ruleset"),
               add_address=attempt("{IP}", "address", "add", "{private}/32", "dev", "tap0"),
               add_route=attempt("{IP}", "route", "add", "{private}/32", "dev", "tap0"),
               link_down=attempt("{IP}", "link", "set", "tap0", "down"),
               new_namespace=attempt("unshare", "--net", "--user", "true"))
        try:
            socket.create_connection(("{private}", 80), timeout=5).close()
            report(private="connected")
        except OSError as e:
            report(private=e.errno)
    """),
    )
    before = len(stand_in_hosts.reached())
    _, outcome = await run_to_end(job, allow_network=True)
    assert outcome.exit_code == 0, job.log.read_text()
    r = job.report()
    for attempt in ("list_rules", "flush_rules", "add_address", "add_route", "link_down", "new_namespace"):
        code, said = r[attempt]
        assert code != 0, (attempt, said)
    assert "Operation not permitted" in r["list_rules"][1]
    assert r["private"] == 113  # the rules still hold
    assert stand_in_hosts.reached()[before:] == []


# --- nothing left behind --------------------------------------------------------------


def network_processes(engine_pid: int) -> dict[int, str]:
    """Live processes given a namespace descriptor of engine `engine_pid` (slirp4netns, and a
    run's gate and its watcher, which exec nsenter): they name it as /proc/<engine>/fd/N.
    Their pids and programs."""
    mark = f"/proc/{engine_pid}/fd/".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if mark in cmdline and state != "Z":
            found[int(pid)] = os.path.basename(cmdline.split(b"\0")[0].decode())
    return found


def namespace_holders(netns: str) -> list[int]:
    """Processes in the network namespace `netns` ("net:[inode]") or holding a descriptor of it."""
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            links = [os.readlink(f"/proc/{pid}/ns/net")]
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            if netns in links:
                holders.append(int(pid))
    return holders


def report_so_far(job: Job) -> dict:
    try:
        return job.report()
    except (OSError, ValueError):  # not written yet, or being written
        return {}


SITS_ON_THE_NETWORK = """
    import os, time
    report(netns=os.readlink("/proc/self/ns/net"))
    while True:
        time.sleep(0.1)
"""


@pytest.mark.parametrize("ending", ["stop", "timeout"])
async def test_a_stopped_or_timed_out_job_leaves_no_network_behind(tmp_path, ending):
    job = make_job(tmp_path, py(SITS_ON_THE_NETWORK))
    timeout = 2.0 if ending == "timeout" else 60.0
    run = await SandboxRun.start(job.spec(allow_network=True, limits=SandboxLimits(wall_timeout_s=timeout)))
    await wait_for(lambda: "netns" in report_so_far(job))
    netns = job.report()["netns"]
    assert netns != os.readlink("/proc/self/ns/net")  # a namespace of its own
    assert list(network_processes(os.getpid()).values()).count("slirp4netns") == 1
    if ending == "stop":
        t0 = time.monotonic()
        await run.stop()
        assert time.monotonic() - t0 < 1.0
    outcome = await run.wait()
    assert outcome.stopped if ending == "stop" else outcome.timed_out
    assert network_processes(os.getpid()) == {}
    assert processes_of(job) == []
    assert namespace_holders(netns) == []  # so the kernel has freed it


DYING_ENGINE = """
import asyncio, json, os, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from services.operator_engine.backends.local.sandbox import SandboxRun, SandboxSpec
job_id, workspace, env, delay = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), float(sys.argv[5])
async def main():
    spec = SandboxSpec(job_id, Path(workspace), (sys.argv[6], sys.argv[7]), env, allow_network=True)
    starting = asyncio.ensure_future(SandboxRun.start(spec))
    if delay >= 0:
        await asyncio.sleep(delay)  # the engine dies at a chosen point of the start-up
    else:  # or once the algorithm runs on its network
        await starting
        report = Path(workspace, "outputs", "report.json")
        while not (report.exists() and "netns" in report.read_text()):
            await asyncio.sleep(0.02)
    os._exit(0)  # without cleaning anything up
asyncio.run(main())
"""


async def test_engine_death_leaves_no_network_behind(tmp_path):
    # start-up of a network-allowed run: ~20 ms to the namespace, ~40 ms to slirp4netns ready
    delays = [0.005, 0.02, 0.04, 0.06, 0.1, -1]
    jobs = [make_job(tmp_path, py(SITS_ON_THE_NETWORK)) for _ in delays]
    engines = await engines_that_die(DYING_ENGINE, jobs, delays)
    await wait_for(lambda: all(network_processes(pid) == {} for pid in engines))
    await wait_for(lambda: all(processes_of(job) == [] for job in jobs))
    reported = [job for job in jobs if "netns" in report_so_far(job)]
    assert jobs[-1] in reported
    for job in reported:
        await wait_for(lambda job=job: namespace_holders(job.report()["netns"]) == [])


# --- what is detected and in force ------------------------------------------------------


def test_detect_capabilities_says_network_allowed_jobs_get_a_network_of_their_own():
    caps = detect_capabilities()
    assert caps.network_problem is None
    assert "net:own" in caps.limits_in_force
    assert "a network of its own: no host, private or metadata address" in caps.describe()


def test_the_rules_cover_every_address_of_the_host():
    v4, v6 = network.host_addresses()
    for address in host_addresses_from_ip() + ["127.0.0.1", "::1"]:
        assert any(_within(address, net) for net in v4 + v6), address
    rules = network.ruleset(v4, v6)
    assert "169.254.0.0/16" in rules and "fc00::/7" in rules and "10.0.0.0/8" in rules


def _within(address: str, network_: str) -> bool:
    ip_ = ipaddress.ip_address(address)
    net = ipaddress.ip_network(network_, strict=False)
    return ip_.version == net.version and ip_ in net


@pytest.mark.parametrize("allow_network", [True, False])
def test_without_an_own_network_a_network_allowed_job_is_refused_at_submit(allow_network):
    host = detect_capabilities()
    without = dataclasses.replace(host, network_problem="slirp4netns not found (Debian package slirp4netns)")
    backend = LocalBackend("127.0.0.1:1", {}, use_sandbox=True, capabilities=without)
    if not allow_network:
        backend.validate("python3 $ALGO", "python", allow_network)  # the rest runs as before
        return
    with pytest.raises(errors.FailedPrecondition) as refused:
        backend.validate("python3 $ALGO", "python", allow_network)
    assert refused.value.code == "network_unavailable"
    assert "slirp4netns not found" in str(refused.value)
    assert "network-allowed jobs refused: slirp4netns not found" in without.describe()
