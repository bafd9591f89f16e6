"""pod_config's domain: the rules and the order of staging a job's /data.

It fetches through the `Fetcher` port of plumbing/fetching.py (whose fetchers
the provider shares) and never speaks gRPC itself: the engine's
JobAgentService is clients/agent.py, and program.py wires them together.
"""
