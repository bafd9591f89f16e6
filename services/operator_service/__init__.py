"""Operator-Service: owns the job records, dispatches jobs to engines and
applies every state change the engines stream to it.

- `api/`: the gRPC surface (OperatorService) and conversions.
- `domain/`: engine links (stream consumption, dispatch, liveness), watching,
  expiry (removal of stored results: DeleteJob and the storage-expiry sweeper).
- `persistence/`: tables, the queries on them, and the Alembic migrations
  (`persistence/migrations/`) that create and upgrade them at start-up.
"""
