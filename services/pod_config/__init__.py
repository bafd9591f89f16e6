"""pod_config: the one-shot program that stages a job's datasets, algorithm
and DDOs into its /data. Laid out like the services: `program` wires it,
`clients/` speaks to the outside (the engine's JobAgentService, and the
URLs, S3 buckets and IPFS nodes files come from), `domain/` stages."""
