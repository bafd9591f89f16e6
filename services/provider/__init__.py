"""Provider: the only component a consumer talks to.

- `api/`: the gRPC servicers (ProviderService, AssetService, LedgerService)
  and their proto <-> domain conversion; `authentication.py` checks a
  request's signature, `downloads.py` is the one result-file streamer.
- `clients/`: outbound gRPC (`operator.py`: the operator-service).
- `domain/`: identity and signed requests, sealing, DDO validation, the
  compute policy and plan, which file locations a sealed list may name,
  results-asset grants (no grpc, no SQL: it reads assets and environments
  through the ports server.py wires in).
- `persistence/`: assets, nonces and the embedded datatoken ledger; where
  signed requests are settled (a worker process); result files read back.
"""
