"""The provider's gRPC surface."""
