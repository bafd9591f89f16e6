"""pod_publish: the one-shot program that uploads a job's results (outputs
and the algorithm's log) to local storage, S3 or IPFS and reports the
results manifest to the engine. Laid out like the services: `program` wires
it, `clients/` speaks to the engine's JobAgentService and the provider,
`domain/` decides what is published and how."""
