"""The engine's gRPC surface: thin servicers that validate, convert and call the domain."""
