"""pod_config's domain: the rules and the order of staging a job's /data.

It fetches through the `Fetcher` port it defines (staging.py) and never
speaks gRPC itself: the fetchers are clients/fetching.py, the engine's
JobAgentService is clients/agent.py, and program.py wires them together.
"""
