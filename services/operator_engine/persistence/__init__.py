"""The engine's own store: every job it holds (`jobs.py`, the domain's JobStore)
and its numbered event log (`event_log.py`, the domain's EventLog), in SQL."""
