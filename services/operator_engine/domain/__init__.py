"""The engine's domain: the stage orchestrator, its values and its ports.

No grpc, no SQL, no backend here: `ports.py` says what the orchestrator needs
(a job store, the event log, a backend) and the outer layers implement it.
"""
