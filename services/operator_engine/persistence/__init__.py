"""The engine's own store: every job it holds, and its numbered event log."""
