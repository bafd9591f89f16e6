"""pod_config: the one-shot program that stages a job's datasets, algorithm
and DDOs into its /data. `staging` is the domain, `fetching` the sources,
`program` the gRPC glue."""
