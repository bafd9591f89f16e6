"""The provider's metrics: signature checks by outcome.

Every signed request is settled by the Settler server.py wires in (a worker
process or a database thread), so the outcomes are counted around it
(`CountedSettler`): `valid`, or the refusal's code (signature_invalid,
nonce_invalid, ...), or `error` when the settling itself failed.
"""

from __future__ import annotations

from plumbing import metrics
from services.provider.domain.signed_requests import Settler, SignedRequest


class CountedSettler:
    """A Settler whose outcomes are counted."""

    def __init__(self, inner: Settler, server_metrics: metrics.Metrics) -> None:
        self._inner = inner
        self._checks = server_metrics.counter(
            "c2d_signature_checks", "signed requests checked, by outcome (valid or the refusal's code)", ("outcome",)
        )
        self._valid = self._checks.labels("valid")

    async def settle(self, batch: list[SignedRequest]) -> list[Exception | None]:
        try:
            outcomes = await self._inner.settle(batch)
        except Exception:
            self._checks.labels("error").inc(len(batch))
            raise
        for outcome in outcomes:
            if outcome is None:
                self._valid.inc()
            else:
                self._checks.labels(getattr(outcome, "code", "") or "error").inc()
        return outcomes

    async def close(self) -> None:
        await self._inner.close()
