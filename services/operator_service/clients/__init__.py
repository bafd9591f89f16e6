"""Outbound gRPC of the operator-service: each call to another c2d service
lives here, and a failed one becomes a plumbing.errors error through
plumbing.grpc_errors.downstream_error. Implements the domain's client ports."""
