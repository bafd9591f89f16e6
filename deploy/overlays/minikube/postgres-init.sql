-- Runs once, when the data volume is initialised: the provider's and the
-- engine's databases beside the operator-service's (POSTGRES_DB).
CREATE DATABASE c2d_provider OWNER c2d;
CREATE DATABASE c2d_engine OWNER c2d;
