"""A network of its own for each network-allowed job (DESIGN.md, "Who may see what").

A job whose dataset allows network access may reach the public internet, and
nothing of ours: not c2d's ports, not any service on the host's loopback or on
the host's own addresses, not private ranges, not a cloud's metadata address.

How (one :class:`JobNetwork` per run)
    * The engine makes a fresh network namespace (unshare(2) in a throwaway
      thread, so it belongs to the host's user namespace) and loads the
      nftables rules below into it, then runs bwrap inside it (the gate execs
      ``nsenter``, which enters it and execs bwrap; bwrap keeps it with
      ``--share-net``). The algorithm is
      root only in bwrap's own user namespace, without capabilities: it has no
      CAP_NET_ADMIN over a namespace the host's root owns, so it can neither
      read nor change the rules.
    * ``slirp4netns`` connects the namespace to the world in user mode: its tap
      device is the namespace's only way out, and each of the job's TCP/UDP
      flows leaves as an ordinary socket of the slirp4netns process on the
      host. ``--disable-host-loopback`` stops its gateway (10.0.2.2) from
      mapping to the host's 127.0.0.1; ``--enable-sandbox`` and
      ``--enable-seccomp`` confine slirp4netns itself (it parses the job's
      packets). No port is forwarded into the namespace.
    * The rules, in the namespace's output hook, refuse every destination in
      :data:`REFUSED_V4` / :data:`REFUSED_V6` and every address of the host
      (read from the kernel at each start), with an ICMP "administratively
      prohibited" so a refused connect fails at once (EHOSTUNREACH). The
      namespace's own loopback stays usable.
    * Lifetime: slirp4netns joins the run's cgroups (the job pays for its
      traffic, and every sweep of the run kills it) and exits by itself when
      its exit pipe closes: the engine closes it when the run ends, and the
      kernel does when the engine dies. The namespace lives as long as
      something holds it (the engine's descriptor, the run, slirp4netns), so
      nothing is left to delete.

DNS
    The job's /etc/resolv.conf names only slirp4netns's forwarder, 10.0.2.3,
    and the rules let through DNS (port 53, UDP and TCP) to that one address.
    slirp4netns relays those messages to the host's own resolver, whatever its
    address (often a private one, e.g. a VPC resolver): the job resolves
    public names exactly when the host does, and reaches that resolver only
    with DNS and only through the forwarder, never directly. The job's
    /etc/hosts names only localhost, so the host's own names stay private.

IPv4 only: slirp4netns's IPv6 is experimental, so a job has no IPv6 route
(its IPv6 rules are there all the same).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "DNS_FORWARDER",
    "HOSTS",
    "REFUSED_V4",
    "REFUSED_V6",
    "TAP_DEVICE",
    "JobNetwork",
    "NetworkUnavailable",
    "host_addresses",
    "probe",
    "ruleset",
]

TOOLS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DNS_FORWARDER = "10.0.2.3"  # slirp4netns's built-in forwarder on its default 10.0.2.0/24
TAP_DEVICE = "tap0"
READY_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 1.0
# The job's view of name resolution (see DNS above), bound read-only over /etc.
RESOLV_CONF = f"nameserver {DNS_FORWARDER}\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# Refused destinations besides the host's own addresses, and why.
REFUSED_V4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this host'"),
    ("10.0.0.0/8", "RFC 1918 (also slirp4netns's own 10.0.2.0/24: its gateway maps to the host)"),
    ("100.64.0.0/10", "RFC 6598 shared address space (carrier NAT; Alibaba's metadata 100.100.100.200)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("169.254.169.254/32", "the metadata address of AWS, GCP and Azure"),
    ("172.16.0.0/12", "RFC 1918"),
    ("192.0.0.0/24", "IETF protocol assignments (Oracle's metadata 192.0.0.192)"),
    ("192.168.0.0/16", "RFC 1918"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, and the broadcast address"),
)
REFUSED_V6: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped: IPv4 behind an IPv6 address"),
    ("64:ff9b::/96", "NAT64 well-known prefix: any IPv4 address, private ones too"),
    ("64:ff9b:1::/48", "NAT64 local-use prefix"),
    ("fc00::/7", "unique local addresses (ULA)"),
    ("fd00:ec2::254/128", "the IPv6 metadata address of AWS"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
# Moves this shell (one thread) into each of the run's cgroups, then becomes slirp4netns.
# Arguments: N, N files to write "0" to (cgroups.JobCgroup.join_files), the command.
_JOIN_THEN_EXEC = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 >"$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'


class NetworkUnavailable(Exception):
    """A job's own network cannot be made here (a tool is missing, or the kernel refuses)."""


def host_addresses() -> tuple[list[str], list[str]]:
    """Every address of this host's network namespace, on every interface (IPv4, IPv6),
    as the kernel's routing tables list them (prefixes where a whole range is local)."""
    v4: list[str] = []
    last = ""
    for line in Path("/proc/thread-self/net/fib_trie").read_text().splitlines():
        text = line.strip()
        if text.startswith("|-- "):  # a leaf: an address; its kinds follow, one a line
            last = text[4:]
        elif text.endswith(" host LOCAL") and last:
            v4.append(f"{last}/{text.split()[0].lstrip('/')}")
    v6 = []
    for line in Path("/proc/thread-self/net/if_inet6").read_text().splitlines():
        digits = line.split()[0]
        v6.append(str(ipaddress.IPv6Address(int(digits, 16))))
    return sorted(set(v4)), sorted(set(v6))


def ruleset(host_v4: Sequence[str], host_v6: Sequence[str]) -> str:
    """The nftables rules of a job's namespace (ranges merged: nft refuses overlapping ones)."""
    v4 = ipaddress.collapse_addresses(
        ipaddress.IPv4Network(a, strict=False) for a in [n for n, _ in REFUSED_V4] + list(host_v4)
    )
    v6 = ipaddress.collapse_addresses(
        ipaddress.IPv6Network(a, strict=False) for a in [n for n, _ in REFUSED_V6] + list(host_v6)
    )
    refused_v4, refused_v6 = ", ".join(map(str, v4)), ", ".join(map(str, v6))
    return f"""
table inet c2d_job {{
    set refused_v4 {{ type ipv4_addr; flags interval; elements = {{ {refused_v4} }}; }}
    set refused_v6 {{ type ipv6_addr; flags interval; elements = {{ {refused_v6} }}; }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname "lo" accept
        ip daddr {DNS_FORWARDER} meta l4proto {{ tcp, udp }} th dport 53 accept
        ip daddr @refused_v4 reject with icmpx type admin-prohibited
        ip6 daddr @refused_v6 reject with icmpx type admin-prohibited
    }}
}}
"""


_PACKAGES = {"slirp4netns": "slirp4netns", "nft": "nftables", "nsenter": "util-linux"}


def _tool(name: str) -> str:
    path = shutil.which(name, path=TOOLS_PATH)
    if path is None:
        raise NetworkUnavailable(f"{name} not found (Debian package {_PACKAGES[name]})")
    return path


def _new_namespace(nft: str) -> int:
    """A descriptor of a fresh network namespace holding the job's rules. unshare(2) moves
    only the calling thread, so a thread of its own makes it and then ends: no thread the
    engine reuses ever leaves the host's namespace. nft, forked by that thread, starts in
    the new namespace."""
    made: dict[str, int] = {}
    failure: list[Exception] = []

    def inside() -> None:
        try:
            rules = ruleset(*host_addresses())  # read before leaving the host's namespace
            if _LIBC.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetworkUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
            loaded = subprocess.run(  # noqa: PLW1510 - the exit code is checked below
                [nft, "-f", "-"], input=rules.encode(), capture_output=True, timeout=10, env={"PATH": TOOLS_PATH}
            )
            if loaded.returncode != 0:
                raise NetworkUnavailable(f"nft refused the job's rules: {loaded.stderr.decode(errors='replace')}")
            made["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, NetworkUnavailable, subprocess.SubprocessError) as exc:  # for the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=inside, name="c2d-job-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return made["fd"]


def _data_pipe(text: str) -> int:
    """A pipe's read end holding `text` (for bwrap --ro-bind-data, which reads and closes it)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, text.encode())  # far below a pipe's capacity
    finally:
        os.close(write_end)
    return read_end


class JobNetwork:
    """One run's namespace, its rules and its slirp4netns: opened before the run starts,
    closed once it ended."""

    def __init__(self, netns_fd: int, slirp: asyncio.subprocess.Process, exit_fd: int, output: IO[bytes]) -> None:
        self._netns_fd = netns_fd
        self._slirp = slirp
        self._exit_fd = exit_fd  # slirp4netns exits when this write end closes
        self._output = output  # what slirp4netns said, for errors
        self._etc_fds: list[int] = []

    @classmethod
    async def open(cls, join_files: Sequence[Path] = ()) -> JobNetwork:
        """The namespace with its rules, and slirp4netns (in the run's cgroups, given their
        join_files) attached and ready. Raises NetworkUnavailable."""
        slirp4netns, nft = _tool("slirp4netns"), _tool("nft")
        _tool("nsenter")
        netns_fd = await asyncio.to_thread(_new_namespace, nft)
        ready_read, ready_write = os.pipe()
        exit_read, exit_write = os.pipe()
        output = tempfile.TemporaryFile(prefix="c2d-slirp4netns-")  # noqa: SIM115 - closed by close()
        try:
            slirp = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                _JOIN_THEN_EXEC,
                "c2d-slirp",
                str(len(join_files)),
                *(str(f) for f in join_files),
                slirp4netns,
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                f"--exit-fd={exit_read}",
                f"--ready-fd={ready_write}",
                "--netns-type=path",
                _fd_path(netns_fd),
                TAP_DEVICE,
                pass_fds=(exit_read, ready_write),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env={"PATH": TOOLS_PATH},
            )
        except BaseException:
            for fd in (ready_read, exit_write, netns_fd):
                os.close(fd)
            output.close()
            raise
        finally:  # slirp4netns holds its own copies
            os.close(ready_write)
            os.close(exit_read)
        network = cls(netns_fd, slirp, exit_write, output)
        try:
            await network._ready(ready_read)
        except BaseException:
            await network.close()
            raise
        finally:
            os.close(ready_read)
        return network

    async def _ready(self, ready_fd: int) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(ready_fd, wake)
        try:
            await asyncio.wait_for(readable, READY_TIMEOUT_S)
            said = os.read(ready_fd, 1)
        except TimeoutError:
            said = b""
        finally:
            loop.remove_reader(ready_fd)
        if said != b"1":  # EOF: slirp4netns ended before it configured the namespace
            self._output.seek(0)
            told = self._output.read(4096).decode(errors="replace").strip()
            raise NetworkUnavailable(f"slirp4netns did not start: {told or 'no message'}")

    def enter_command(self) -> list[str]:
        """Prefix of bwrap's command: it starts in the job's namespace (nsenter setns(2)s
        and execs, so the run keeps its pid)."""
        return [_tool("nsenter"), f"--net={_fd_path(self._netns_fd)}", "--"]

    def etc_args(self) -> list[str]:
        """bwrap arguments for the job's resolv.conf and hosts; their pipes must reach bwrap
        (pass_fds=etc_fds()) and are closed here by sent()."""
        args = []
        for text, path in ((RESOLV_CONF, "/etc/resolv.conf"), (HOSTS, "/etc/hosts")):
            fd = _data_pipe(text)
            self._etc_fds.append(fd)
            args += ["--ro-bind-data", str(fd), path]
        return args

    def etc_fds(self) -> tuple[int, ...]:
        return tuple(self._etc_fds)

    def sent(self) -> None:
        """The launcher holds its copies of the etc pipes now."""
        for fd in self._etc_fds:
            os.close(fd)
        self._etc_fds.clear()

    async def close(self) -> None:
        """Ends slirp4netns (it exits on its closed exit pipe; killed if it lingers) and lets
        the namespace go (gone once the run's processes are). Safe to call twice."""
        self.sent()
        if self._exit_fd >= 0:
            os.close(self._exit_fd)
            self._exit_fd = -1
        try:
            await asyncio.wait_for(self._slirp.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._slirp.kill()
            await self._slirp.wait()
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1
        self._output.close()


def _fd_path(fd: int) -> str:
    # another process's view of our descriptor: nsenter and slirp4netns open it there
    return f"/proc/{os.getpid()}/fd/{fd}"


_PROBED: list[str | None] = []


def probe() -> str | None:
    """None when a job's own network can be made here, else why not (tried once: ~40 ms,
    on a loop of its own, so it may be called from a coroutine at start-up)."""
    if not _PROBED:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            _PROBED.append(pool.submit(asyncio.run, _try_one()).result())
    return _PROBED[0]


async def _try_one() -> str | None:
    try:
        network = await JobNetwork.open()
    except (NetworkUnavailable, OSError) as exc:
        return str(exc)
    await network.close()
    return None
