"""What the operator-service does: follow engines, dispatch, watch, expire
results. No grpc and no SQL here: the engine clients and the store are
reached through the ports in `ports.py`, which `server.py` wires in."""
