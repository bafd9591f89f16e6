"""Operator-Service: owns the job records, dispatches jobs to engines and
applies every state change the engines stream to it.

- `api/`: the gRPC surface (OperatorService) and conversions.
- `clients/`: outbound gRPC, the engine client; failures become domain errors.
- `domain/`: engine links (stream consumption, dispatch claims, liveness),
  watching, expiry (removal of stored results: DeleteJob and the
  storage-expiry sweeper). No grpc, no SQL: it drives the engine clients and
  the store through the Protocols in `domain/ports.py`.
- `persistence/`: tables, the queries on them (`jobs.py`), the store the
  domain's ports are served by (`store.py`), and the Alembic migrations
  (`persistence/migrations/`) that create and upgrade them at start-up.
- `server.py` wires them together.
"""
