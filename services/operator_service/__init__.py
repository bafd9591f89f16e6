"""Operator-Service: owns the job records, dispatches jobs to engines and
applies every state change the engines stream to it.

- `api/`: the gRPC surface (OperatorService) and conversions.
- `domain/`: engine links (stream consumption, dispatch, liveness), watching.
- `persistence/`: tables and the queries on them.
"""
