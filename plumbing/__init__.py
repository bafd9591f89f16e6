"""What every c2d service shares: settings, the gRPC server bootstrap, database
sessions, internal authentication, error mapping and storage. Nothing here
knows about jobs or assets beyond the shared vocabulary in `statuses`."""
