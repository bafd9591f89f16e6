"""Provider: the only component a consumer talks to.

- `api/`: the gRPC surface (ProviderService, AssetService, LedgerService):
  request validation, signature checks, proto <-> domain conversion.
- `domain/`: identity, sealing, DDO validation and the compute policy (pure).
- `persistence/`: assets, nonces and the embedded datatoken ledger.
"""
