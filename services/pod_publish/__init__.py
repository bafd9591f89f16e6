"""pod_publish: the one-shot program that uploads a job's results (outputs
and the algorithm's log) to local storage, S3 or IPFS and reports the
results manifest to the engine. `publishing` is the domain, `program` the
gRPC glue."""
