"""The gRPC surface of the operator-service."""
