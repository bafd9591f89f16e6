import os

pytest_plugins = ["tests.support.servers", "tests.support.stacks"]


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a test that did not run: fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") == "true" and skipped:
        print(f"\nCI: {len(skipped)} test(s) skipped; every test must run in CI")
        session.exitstatus = 1
