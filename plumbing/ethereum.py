"""eth-account, as every c2d process imports it: with the recursion limit kept.

py_ecc, which eth-account imports (through eth-keyfile), raises the
process-wide recursion limit to 100,000 when it is imported. A recursion that
deep overflows the C stack long before Python's limit would stop it, so one
deeply nested value (JSON, a repr, a copy) kills the whole process with
SIGSEGV instead of raising RecursionError. c2d uses none of py_ecc (it signs
and recovers with eth-keys' coincurve backend), so the limit is put back as
soon as the import is done. Import Account and encode_defunct from here,
never from eth_account (import-linter checks it).
"""

from __future__ import annotations

import sys

_limit = sys.getrecursionlimit()

from eth_account import Account  # noqa: E402 - imported between reading the limit and restoring it
from eth_account.messages import encode_defunct  # noqa: E402

sys.setrecursionlimit(_limit)

__all__ = ["Account", "encode_defunct"]
