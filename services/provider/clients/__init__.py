"""The provider's outbound gRPC: each call's failure becomes the domain error
plumbing.grpc_errors.downstream_error gives, so the caller's refusal reason
reaches the consumer unchanged."""
