"""The consumer's and publisher's verbs: account, asset, ledger, env, compute, jobs, sign.

Each is a thin layer over c2d_sdk: parse the command line, make the call,
print the result (for people, or with --json in the shapes docs/cli.md fixes).
Errors are raised and turned into a message and an exit code by cli/main.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, ledger_pb2, provider_pb2
from c2d_sdk import AsyncClient, ComputeRequest, Signer
from c2d_sdk.assets import datatoken_address
from cli import accounts, output
from plumbing import untrusted

T = TypeVar("T")
EXIT_JOB_FAILED = 1
FAILED_STATUSES = frozenset({31, 32, 41, 42, 61, 62})

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON (its shape: docs/cli.md)")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="print only the id, for a shell variable")]


class UsageProblem(Exception):
    """Something on the command line or in a file it names is wrong (exit 2)."""


def provider_address(ctx: typer.Context) -> str:
    return str(ctx.find_root().params.get("provider") or "127.0.0.1:50051")


def run(ctx: typer.Context, action: Callable[[AsyncClient], Coroutine[Any, Any, T]], signed: bool = True) -> T:
    """Runs ``action`` with a client of the account's (or none, for public calls) on the provider."""
    signer = accounts.load() if signed else None

    async def session() -> T:
        async with AsyncClient(provider_address(ctx), signer) as client:
            return await action(client)

    return asyncio.run(session())


def job_failed(job: common_pb2.Job) -> bool:
    return job.status in FAILED_STATUSES or job.end_reason not in (
        common_pb2.END_REASON_UNSPECIFIED,
        common_pb2.END_REASON_COMPLETED,
    )


def _say_job(job: common_pb2.Job) -> None:
    line = f"job {job.job_id}: status {job.status} {job.status_text}"
    if job.error_message:
        line += f" — {job.error_code}: {job.error_message}"
    out.print(line)


# -- account ------------------------------------------------------------------------------

account_app = typer.Typer(help="the account that signs your requests (a key in your config directory)")


def _account_answer(signer: Signer, as_json: bool, verb: str) -> None:
    if as_json:
        output.emit_json({"address": signer.address, "key_file": str(accounts.key_file())})
    else:
        out.print(f"{verb} {signer.address} (key in {accounts.key_file()})")


@account_app.command("new")
def account_new(
    force: Annotated[bool, typer.Option("--force", help="replace the account you have (its key is lost)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an account: a new key, kept in your config directory."""
    if accounts.key_file().exists() and not force:
        raise UsageProblem(
            f"you already have an account ({accounts.load().address}, key in {accounts.key_file()}): "
            "use --force to replace it (its key is lost)"
        )
    signer = Signer.generate()
    accounts.save(signer)
    _account_answer(signer, as_json, "created account")


@account_app.command("show")
def account_show(as_json: JsonFlag = False) -> None:
    """Show your account's address and where its key is."""
    _account_answer(accounts.load(), as_json, "account")


@account_app.command("import")
def account_import(
    key_file: Annotated[str, typer.Argument(help="a file holding the hex private key, or - for stdin")] = "-",
    force: Annotated[bool, typer.Option("--force", help="replace the account you have")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Use an existing Ethereum key as your account (read from a file or stdin, never the command line)."""
    text = sys.stdin.read() if key_file == "-" else _read_text(Path(key_file))
    try:
        signer = Signer(text.strip())
    except (ValueError, TypeError):
        raise UsageProblem("that is not a private key: expected 64 hex digits (0x optional)") from None
    if accounts.key_file().exists() and not force and accounts.load().address != signer.address:
        raise UsageProblem(f"you already have another account ({accounts.load().address}): use --force to replace it")
    accounts.save(signer)
    _account_answer(signer, as_json, "imported account")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}") from None


# -- asset --------------------------------------------------------------------------------

asset_app = typer.Typer(help="publish and find datasets and algorithms")


@asset_app.command("publish")
def asset_publish(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="the asset's description (YAML or JSON; docs/cli.md)")],
    trust: Annotated[
        list[str] | None, typer.Option("--trust", help="a dataset: let this algorithm DID run on it (repeatable)")
    ] = None,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Publish a dataset or an algorithm: checksums computed, file locations sealed for the provider."""
    try:
        description = yaml.safe_load(_read_text(file))
    except yaml.YAMLError as exc:
        raise UsageProblem(f"{file} is not YAML or JSON: {exc}") from None
    if not isinstance(description, dict):
        raise UsageProblem(f"{file} must describe one asset as a mapping (type, name, files, ...)")
    if trust:
        compute = description.setdefault("compute", {})
        compute["trusted_algorithms"] = [*(compute.get("trusted_algorithms") or []), *trust]
    published = run(
        ctx,
        lambda client: client.publish_asset(
            description, base_dir=file.parent, files_checksums=accounts.files_checksums()
        ),
    )
    if published.files_checksum:
        accounts.remember_files_checksum(published.did, published.files_checksum)
    if as_json:
        output.emit_json(output.published(published))
    elif quiet:
        print(published.did)
    else:
        out.print(f"published {published.type} {published.did}")
        out.print(f"  service {published.service_id}, datatoken {published.datatoken}")
        if published.files_checksum:
            out.print(f"  files checksum {published.files_checksum}")


@asset_app.command("get")
def asset_get(ctx: typer.Context, did: str, as_json: JsonFlag = False) -> None:
    """Show an asset's DDO (its file locations stay sealed)."""
    found = run(ctx, lambda client: client.get_asset(did), signed=False)
    if as_json:
        output.emit_json(output.asset(found))
    else:
        out.print(f"{found.type} {found.name!r} {found.did}, published by {found.owner}")
        out.print_json(json.dumps(found.ddo))


@asset_app.command("ls")
def asset_ls(
    ctx: typer.Context,
    type: Annotated[str, typer.Option("--type", help="dataset or algorithm")] = "",
    owner: Annotated[str, typer.Option("--owner", help="only this publisher's (an address)")] = "",
    as_json: JsonFlag = False,
) -> None:
    """List published assets."""
    found = run(ctx, lambda client: client.list_assets(type, owner), signed=False)
    if as_json:
        output.emit_json({"assets": [json_format.MessageToDict(a, preserving_proto_field_name=True) for a in found]})
        return
    table = Table("DID", "type", "name", "owner")
    for summary in found:
        table.add_row(summary.did, summary.type, summary.name, summary.owner)
    out.print(table)


# -- ledger -------------------------------------------------------------------------------

ledger_app = typer.Typer(help="datatokens on the provider's embedded ledger")
ServiceOption = Annotated[str, typer.Option("--service", help="the asset's service (default: its first)")]


async def _datatoken(client: AsyncClient, did: str, service: str) -> tuple[str, str]:
    """(service id, datatoken address) of an asset's service."""
    asset = await client.get_asset(did)
    service_id = service or (asset.service_ids[0] if asset.service_ids else "")
    if service_id not in asset.service_ids:
        raise UsageProblem(f"{did} has no service {service_id!r} (it has {', '.join(asset.service_ids)})")
    return service_id, datatoken_address(did, service_id)


@ledger_app.command("mint")
def ledger_mint(
    ctx: typer.Context,
    did: str,
    to: Annotated[str, typer.Option("--to", help="who gets them (default: you)")] = "",
    amount: Annotated[int, typer.Option("--amount", min=1, help="how many")] = 1,
    service: ServiceOption = "",
    as_json: JsonFlag = False,
) -> None:
    """Mint datatokens of an asset you published (to you, or to a consumer)."""

    async def mint(client: AsyncClient) -> dict[str, Any]:
        service_id, token = await _datatoken(client, did, service)
        receiver = to or client.address
        balance = await client.mint(token, receiver, amount)
        return {"did": did, "service_id": service_id, "datatoken": token, "to": receiver, "balance": balance}

    answer = run(ctx, mint)
    if as_json:
        output.emit_json(answer)
    else:
        out.print(f"minted {amount}: {answer['to']} now holds {answer['balance']} of {did} ({answer['service_id']})")


@ledger_app.command("balance")
def ledger_balance(
    ctx: typer.Context,
    did: str,
    address: Annotated[str, typer.Option("--address", help="whose (default: yours)")] = "",
    service: ServiceOption = "",
    as_json: JsonFlag = False,
) -> None:
    """How many datatokens of an asset an address holds."""

    async def balance(client: AsyncClient) -> dict[str, Any]:
        service_id, token = await _datatoken(client, did, service)
        holder = address or client.address
        amount = await client.balance(token, holder)
        return {"did": did, "service_id": service_id, "datatoken": token, "address": holder, "balance": amount}

    answer = run(ctx, balance, signed=not address)
    if as_json:
        output.emit_json(answer)
    else:
        out.print(f"{answer['address']} holds {answer['balance']} of {did} ({answer['service_id']})")


# -- env ----------------------------------------------------------------------------------

env_app = typer.Typer(help="compute environments")


@env_app.command("ls")
def env_ls(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the compute environments, their limits and whether they take jobs now."""
    found = run(ctx, lambda client: client.environments(), signed=False)
    if as_json:
        output.emit_json({"environments": [output.environment(e) for e in found]})
        return
    table = Table("id", "available", "cpu", "memory", "disk", "max duration", "jobs running/queued/max", "price/min")
    for e in found:
        table.add_row(
            e.id,
            "yes" if e.available else "no",
            f"{e.cpu_cores:g}",
            f"{e.memory_bytes >> 20} MiB",
            f"{e.disk_bytes >> 20} MiB",
            f"{e.max_job_duration_seconds} s",
            f"{e.running_jobs}/{e.queued_jobs}/{e.max_jobs}",
            "free" if e.free else e.price_per_minute,
        )
    out.print(table)


# -- compute ------------------------------------------------------------------------------

compute_app = typer.Typer(help="run a job and follow it: start, status, watch, logs, result, stop, delete")


def _parameters(pairs: list[str]) -> dict[str, Any]:
    """k=v pairs; a value that reads as JSON (a number, true, a list...) is taken as such."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageProblem(f"--param {pair!r}: expected key=value")
        try:
            parameters[key] = untrusted.parse_json(value, f"--param {key}")
        except ValueError:  # not JSON: the text itself
            parameters[key] = value
    return parameters


async def _follow(client: AsyncClient, job_id: str, as_json: bool, quiet: bool = False) -> common_pb2.Job:
    """Shows each status of the job until it ends (JSON lines with --json); returns its last state."""
    last = None
    live = not as_json and not quiet and err.is_terminal
    with err.status(f"job {job_id}", spinner="dots") if live else contextlib.nullcontext():
        async for job in client.watch(job_id):
            if last is not None and last.status == job.status:
                continue
            last = job
            if as_json:
                output.emit_json(output.job(job))
            elif not quiet:
                _say_job(job)
    return await client.job(job_id)


@compute_app.command("start")
def compute_start(
    ctx: typer.Context,
    dataset: Annotated[list[str], typer.Option("--dataset", help="a dataset DID (repeatable)")],
    algorithm: Annotated[str, typer.Option("--algorithm", help="the algorithm's DID")],
    param: Annotated[list[str] | None, typer.Option("--param", help="an algorithm parameter k=v (repeatable)")] = None,
    env: Annotated[str, typer.Option("--env", help="the environment id (default: the first available)")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="show its status live until it ends")] = False,
    as_json: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Start a job, ordering each asset you hold no valid order for (one datatoken each)."""
    request = ComputeRequest(
        datasets=dataset, algorithm=algorithm, environment_id=env, parameters=_parameters(param or [])
    )

    async def start(client: AsyncClient) -> common_pb2.Job:
        started = await client.start_compute(request)
        if as_json and not wait:
            output.emit_json(output.job(started.job))
        elif quiet:
            print(started.job_id, flush=True)
        elif not as_json:
            out.print(f"job {started.job_id} started in {started.job.environment_id}")
        if not wait:
            return started.job
        return await _follow(client, started.job_id, as_json, quiet)

    job = run(ctx, start)
    if wait and job_failed(job):
        raise typer.Exit(EXIT_JOB_FAILED)


@compute_app.command("status")
def compute_status(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """A job's status, why it ended, and its result files."""
    job = run(ctx, lambda client: client.job(job_id))
    if as_json:
        output.emit_json(output.job(job))
        return
    _say_job(job)
    for file in job.results.files:
        out.print(f"  result {file.index}: {file.path} ({file.size} bytes, sha256 {file.sha256})")


@compute_app.command("watch")
def compute_watch(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Show each status of a job until it ends (exit 1 if it failed)."""
    job = run(ctx, lambda client: _follow(client, job_id, as_json))
    if job_failed(job):
        raise typer.Exit(EXIT_JOB_FAILED)


@compute_app.command("logs")
def compute_logs(
    ctx: typer.Context,
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the algorithm's log (stdout and stderr)."""

    async def logs(client: AsyncClient) -> None:
        offset = 0
        async for data in client.logs(job_id, follow):
            if as_json:
                output.emit_json({"offset": offset, "text": data.decode("utf-8", "replace")})
            else:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            offset += len(data)

    run(ctx, logs)


@compute_app.command("result")
def compute_result(
    ctx: typer.Context,
    job_id: str,
    out_dir: Annotated[Path | None, typer.Option("-o", "--output", help="where to save them (default: ./JOB)")] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="stream through the provider even when it offers a direct link")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Download a job's results and the algorithm's log, each checked against the provider-signed sha256.

    Each file is read straight from the results storage through a short-lived link when the provider
    offers one (S3, an IPFS gateway), else streamed through the provider."""
    target = out_dir or Path(job_id)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
    ) as progress:
        task = progress.add_task(f"job {job_id}", total=None)
        files = run(
            ctx,
            lambda client: client.download_results(
                job_id,
                target,
                lambda done, total: progress.update(task, completed=done, total=total),
                direct=not stream,
            ),
        )
    if as_json:
        output.emit_json({"job_id": job_id, "files": [output.downloaded(f) for f in files]})
        return
    for file in files:
        out.print(f"saved {file.saved_to} ({file.size} bytes, sha256 {file.sha256} as signed)")


@compute_app.command("stop")
def compute_stop(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Ask a running job to stop."""
    job = run(ctx, lambda client: client.stop(job_id))
    if as_json:
        output.emit_json(output.job(job))
    else:
        _say_job(job)


@compute_app.command("delete")
def compute_delete(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Delete an ended job and its results."""
    run(ctx, lambda client: client.delete(job_id))
    if as_json:
        output.emit_json({"job_id": job_id, "deleted": True})
    else:
        out.print(f"deleted job {job_id}")


# -- jobs ---------------------------------------------------------------------------------

jobs_app = typer.Typer(help="your jobs")


@jobs_app.command("ls")
def jobs_ls(
    ctx: typer.Context,
    status: Annotated[list[int] | None, typer.Option("--status", help="only jobs in this status (repeatable)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List your jobs (and those you were named a viewer of), newest first."""
    unknown = [s for s in status or [] if s not in common_pb2.JobStatus.values() or s == 0]
    if unknown:
        raise UsageProblem(f"--status {unknown[0]} is not a job status (1, 10, 20, 30, 31, 32, 40, ... 70)")
    found = run(ctx, lambda client: client.list_jobs(status or []))
    if as_json:
        output.emit_json({"jobs": [output.job(j) for j in found]})
        return
    table = Table("job", "status", "algorithm", "datasets", "created")
    for job in found:
        created = job.created_at.ToJsonString() if job.HasField("created_at") else ""
        table.add_row(
            job.job_id, f"{job.status} {job.status_text}", job.algorithm_did, ", ".join(job.dataset_dids), created
        )
    out.print(table)


# -- sign ---------------------------------------------------------------------------------

SIGNED_SERVICES = (provider_pb2, asset_pb2, ledger_pb2)


def request_type(method: str) -> tuple[str, type]:
    """(the RPC's name, its request class) for StartCompute, ProviderService/StartCompute or
    c2d.provider.v1.ProviderService.StartCompute."""
    name = method.replace("/", ".").rsplit(".", 1)[-1]
    for module in SIGNED_SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            rpc = service.methods_by_name.get(name)
            if rpc is not None and "signature" in rpc.input_type.fields_by_name:
                return name, getattr(module, rpc.input_type.name)
    signed = sorted(
        rpc.name
        for module in SIGNED_SERVICES
        for service in module.DESCRIPTOR.services_by_name.values()
        for rpc in service.methods
        if "signature" in rpc.input_type.fields_by_name
    )
    raise UsageProblem(f"{method!r} is not a signed RPC; these are: {', '.join(signed)}")


def sign(
    method: Annotated[
        str, typer.Argument(help="the RPC, e.g. StartCompute or c2d.provider.v1.ProviderService/GetJobDetails")
    ],
    request_json: Annotated[str, typer.Argument(metavar="JSON", help="the request as JSON, @FILE, or - for stdin")],
    as_json: JsonFlag = False,
) -> None:
    """Print the request with its signature filled in by your account, for `grpcurl -d @`."""
    name, cls = request_type(method)
    if request_json == "-":
        text = sys.stdin.read()
    elif request_json.startswith("@"):
        text = _read_text(Path(request_json[1:]))
    else:
        text = request_json
    try:
        request = json_format.ParseDict(untrusted.parse_json(text or "{}", "JSON"), cls())
    except (ValueError, json_format.ParseError) as exc:
        raise UsageProblem(f"that is not a {cls.__name__} as JSON: {exc}") from None
    accounts.load().sign(name, request)
    output.emit_json(json_format.MessageToDict(request, preserving_proto_field_name=True))
