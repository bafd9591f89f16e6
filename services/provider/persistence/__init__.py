"""The provider's tables: assets, nonces, and the embedded datatoken ledger."""
