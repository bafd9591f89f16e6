"""The RPC fuzzer (hypothesis) shared by tests/fuzz and bench/pressure.py."""
