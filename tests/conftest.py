import os

pytest_plugins = ["testkit.fixtures"]

# The servers a test starts as processes serve their metrics on free ports: the
# defaults (9551-9553) are `c2d up`'s, and test runs share this machine.
for _server in ("PROVIDER", "OPERATOR", "ENGINE"):
    os.environ.setdefault(f"C2D_{_server}_METRICS_ADDRESS", "127.0.0.1:0")


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a test that did not run: fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped:
        print(f"\nCI: {len(skipped)} test(s) skipped; every test must run in CI")
        session.exitstatus = 1
