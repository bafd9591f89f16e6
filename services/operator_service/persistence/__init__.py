"""The operator-service's tables and queries."""
