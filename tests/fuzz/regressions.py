"""Requests the fuzzer found failing, by RPC name (Service/Method): each
replays as an @example of its RPC before any new example, in CI and in
bench/pressure.py."""

from __future__ import annotations

from tests.fuzz.harness import Case

REGRESSIONS: dict[str, list[Case]] = {}
