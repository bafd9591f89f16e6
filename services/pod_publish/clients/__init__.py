"""pod_publish's outbound calls: the engine's JobAgentService (agent.py) and
the provider's AssetService, which registers results as an asset (provider.py)."""
