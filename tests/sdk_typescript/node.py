"""Running the TypeScript SDK's compiled scripts (sdk/typescript/dist) from the tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "sdk" / "typescript" / "dist"
NODE_TIMEOUT_S = 120.0


def build_sdk() -> Path:
    """Installs the SDK's locked dependencies if needed and compiles it (the Makefile's rule)."""
    subprocess.run(["make", "-s", "--no-print-directory", "sdk-ts-build"], cwd=REPO, check=True, timeout=600)
    return DIST


async def run_node(script: str, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Runs dist/<script> with node, without blocking the event loop the stack serves on."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DIST / script),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), NODE_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def interop(*questions: dict[str, Any]) -> list[Any]:
    """The answers of scripts/interop.ts to these questions, in order."""
    code, out, err = await run_node("scripts/interop.js", stdin=json.dumps(list(questions)))
    assert code == 0, err
    answers = json.loads(out)
    assert len(answers) == len(questions)
    return answers
