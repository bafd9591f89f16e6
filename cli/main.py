"""`c2d`: the stack (up, demo, config) and every step of a job (account, asset, ledger, env,
compute, jobs, sign).

Exit codes: 0 success; 1 the job failed, or the provider refused what was asked; 2 a usage
error (the command line, a file it names, a value the provider finds invalid or unknown);
3 the provider (or a port `c2d up` needs) is unreachable. No traceback reaches a user: each
error is one message that says what to do.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from c2d_sdk import C2DError, IntegrityError, InvalidDescription, Refused, Unreachable
from cli import accounts, verbs
from plumbing import settings
from plumbing.server import configure_observability

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
# Refusals that mean the request itself named something wrong: a usage error.
USAGE_STATUSES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE"})

app = typer.Typer(
    name="c2d",
    help="compute-to-data: publish data and algorithms, run jobs beside the data, get the results",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(verbs.account_app, name="account")
app.add_typer(verbs.asset_app, name="asset")
app.add_typer(verbs.ledger_app, name="ledger")
app.add_typer(verbs.env_app, name="env")
app.add_typer(verbs.compute_app, name="compute")
app.add_typer(verbs.jobs_app, name="jobs")
app.command("sign")(verbs.sign)


def version() -> str:
    return metadata.version("c2d")


def _print_version(value: bool) -> None:
    if value:
        print(f"c2d {version()} (c2d-sdk {metadata.version('c2d-sdk')})")
        raise typer.Exit()


@app.callback()
def root(
    provider: Annotated[
        str,
        typer.Option("--provider", envvar="C2D_PROVIDER_ADDRESS", help="the provider's host:port"),
    ] = "127.0.0.1:50051",
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """compute-to-data: publish data and algorithms, run jobs beside the data, get the results."""


@app.command("up")
def up(
    processes: Annotated[
        bool, typer.Option("--processes", help="one process per server (more throughput on several cores)")
    ] = False,
) -> None:
    """Run the provider, operator-service and operator-engine on this machine until Ctrl-C."""
    from cli import stack

    configure_observability("c2d", default_level="WARNING")
    servers = stack.from_environment()
    problem = stack.listen_problem(*servers, fixed_ports=processes)
    if problem:
        raise verbs.UsageProblem(problem)
    print(f"c2d: data in {settings.data_dir()} (C2D_DATA_DIR sets another place)", flush=True)
    if processes:
        raise typer.Exit(asyncio.run(stack.run_processes(*servers)))
    raise typer.Exit(asyncio.run(stack.run_in_process(*servers)))


@app.command("demo")
def demo(
    ctx: typer.Context,
    out_dir: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="where the result goes (default: <data dir>/results-downloaded)"),
    ] = None,
    as_json: verbs.JsonFlag = False,
) -> None:
    """Publish a sample dataset and algorithm, run a job on them as your account, download the result and log."""
    from cli.demo import demo_main

    configure_observability("c2d", default_level="WARNING")
    consumer = accounts.load_or_create()
    say = (lambda *_: None) if as_json else print
    say(f"c2d demo: your account {consumer.address} is the consumer (key in {accounts.key_file()})")
    target = out_dir or settings.data_dir() / "results-downloaded"
    outcome = asyncio.run(demo_main(verbs.provider_address(ctx), consumer.private_key, target, say))
    if as_json:
        keys = ("job_id", "ok", "status", "statuses", "seconds", "error", "result", "saved", "log")
        verbs.output.emit_json({"consumer": consumer.address, **{key: outcome.get(key) for key in keys}})
    raise typer.Exit(EXIT_OK if outcome["ok"] else EXIT_FAILED)


@app.command("config")
def config(as_json: verbs.JsonFlag = False) -> None:
    """List every setting the servers and pods read, with its default and meaning."""
    from cli import settings_catalog

    catalogue = settings_catalog.catalogue()
    if as_json:
        verbs.output.emit_json(
            {
                "settings": [
                    {"name": s.name, "default": s.default, "meaning": s.meaning, "read_by": s.read_by}
                    for s in catalogue
                ]
            }
        )
        return
    width = max(len(s.name) for s in catalogue)
    group = None
    for s in catalogue:
        if s.read_by != group:
            group = s.read_by
            print(f"\n# {group}")
        print(f"{s.name:<{width}}  {s.default or '(empty)':<24}  {s.meaning}")


def _refusal_message(exc: Refused) -> str:
    where = f" ({exc.field})" if exc.field else ""
    reason = f" [{exc.reason}]" if exc.reason else ""
    return f"the provider refused it{where}: {exc.message}{reason}"


def main() -> None:
    """The entry point: runs the command and turns every failure into a message and an exit code."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("c2d: interrupted", file=sys.stderr)
        code = 130
    except typer.exceptions.TyperException as exc:  # usage errors (typer's click), not shown yet
        exc.show()  # type: ignore[attr-defined]  # they are typer's ClickExceptions, which add show()
        code = EXIT_USAGE
    except Unreachable as exc:
        print(
            f"c2d: {exc.message}\n"
            "  Is the stack running? Start it with `c2d up`, or point --provider (C2D_PROVIDER_ADDRESS) at yours.",
            file=sys.stderr,
        )
        code = EXIT_UNREACHABLE
    except Refused as exc:
        print(f"c2d: {_refusal_message(exc)}", file=sys.stderr)
        code = EXIT_USAGE if exc.code in USAGE_STATUSES else EXIT_FAILED
    except (verbs.UsageProblem, accounts.NoAccount, InvalidDescription) as exc:
        print(f"c2d: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except (IntegrityError, C2DError) as exc:
        print(f"c2d: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except settings.SettingsError as exc:
        print(f"c2d: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, not a traceback
        print(f"c2d: unexpected error ({type(exc).__name__}: {exc}); please report it", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
