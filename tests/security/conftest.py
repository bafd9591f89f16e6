from tests.pod_config.httpserver import server  # noqa: F401 - the fixture
