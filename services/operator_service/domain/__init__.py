"""What the operator-service does: follow engines, dispatch, watch. No grpc servicers here."""
