"""pod_config's outbound calls: the engine's JobAgentService (agent.py) and
the fetchers that download a job's files from URLs, S3 and IPFS (fetching.py)."""
