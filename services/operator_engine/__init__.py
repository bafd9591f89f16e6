"""Operator-Engine: runs each job as three stages (pod_config, algorithm,
pod_publish) on a backend, and streams every state change to the
operator-service.

- `api/`: the gRPC surface (EngineService, JobAgentService) and conversions.
- `domain/`: the stage orchestrator, the values it shares with backends, and
  the ports (Protocols) through which it drives the store and the backend.
- `backends/`: where stages run: `local/` (processes, the algorithm in a
  bubblewrap sandbox), `noop.py` (every stage succeeds at once).
- `persistence/`: the engine's own store of jobs and its event log.
- `server.py`: wires them together.
"""
