"""Where a job's stages run. Each backend implements `base.Backend`."""
