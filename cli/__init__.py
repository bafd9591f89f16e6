"""The `c2d` command: run the stack (`up`), run the demo (`demo`), and a
small signed client for consumers and publishers (`client`)."""
