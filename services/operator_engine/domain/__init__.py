"""The engine's domain: stage orchestration and the event log. No grpc here."""
