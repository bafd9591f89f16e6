"""Every setting the servers and pods read: what `c2d config` lists.

Most come from the settings dataclasses (their defaults and one-line docs
live beside the code that reads them); the few variables read directly
(data directory, log level, service token, TLS, results storage, and what the
engine hands each pod) are described here. tests/cli/test_config.py fails when
the code reads a C2D_ variable this list lacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing import auth, settings
from plumbing.fetching import StagingSettings
from plumbing.storage.base import StorageConfig
from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # as it would be written in the environment ("" = unset)
    meaning: str
    read_by: str


def environment_form(value: Any) -> str:
    """A default as you would set it: true/false, comma-separated lists, plain numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(environment_form(item) for item in value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


EVERY_PROCESS = "every server and pod"
STORAGE = "results storage (engine, pod_publish, operator-service's sweeper)"
POD = "set by the engine for each pod (not to be set by hand)"

_DIRECT = (
    (
        "C2D_DATA_DIR",
        "",
        "where the embedded stack keeps databases, keys and results "
        "(empty: $XDG_DATA_HOME/c2d, i.e. ~/.local/share/c2d)",
        EVERY_PROCESS,
    ),
    (
        "C2D_LOG_LEVEL",
        "INFO",
        "logging level: DEBUG, INFO, WARNING, ERROR (the c2d command's own: WARNING)",
        EVERY_PROCESS,
    ),
    (
        "C2D_LOG_FORMAT",
        "auto",
        "json (one object a line), text, or auto: text when stderr is a terminal, else json",
        EVERY_PROCESS,
    ),
    (
        "C2D_SERVICE_TOKEN",
        "",
        "the token internal calls carry (empty: one kept in <data dir>/service-token)",
        EVERY_PROCESS,
    ),
    (auth.TLS_VARIABLES[0], "", "PEM certificate of this process for mutual TLS on the internal ports", EVERY_PROCESS),
    (auth.TLS_VARIABLES[1], "", "PEM private key of that certificate", EVERY_PROCESS),
    (auth.TLS_VARIABLES[2], "", "PEM CA that internal peers' certificates must chain to", EVERY_PROCESS),
)

_STORAGE_MEANINGS = {
    "kind": "where results go: local, s3 or ipfs",
    "local_root": "the local results directory (empty: <data dir>/results)",
    "s3_endpoint": "S3 host:port, no scheme",
    "s3_access_key": "S3 access key",
    "s3_secret_key": "S3 secret key",
    "s3_bucket": "S3 bucket of the results",
    "s3_secure": "talk HTTPS to S3",
    "s3_region": "S3 region (empty: the server's default)",
    "s3_public_endpoint": "where consumers reach S3 for result links (host:port or http(s)://host:port; "
    "empty: s3_endpoint); read by the provider",
    "ipfs_api": "Kubo RPC base URL, e.g. http://127.0.0.1:5001",
    "ipfs_gateway": "IPFS HTTP gateway consumers can reach, e.g. https://ipfs.io (empty: result links give "
    "only the CID); read by the provider",
    "part_size": "multipart upload part size in bytes",
}

_POD = (
    ("C2D_JOB_ID", "the job the pod works for"),
    ("C2D_JOB_TOKEN", "the job's token for the engine's JobAgentService"),
    ("C2D_AGENT_ADDRESS", "the engine's JobAgentService address"),
    ("C2D_DATA_ROOT", "the job's /data directory"),
    ("C2D_ADMIN_DIR", "where the pod writes the operator's logs"),
    ("C2D_JOB_TOKEN_FILE", "a file holding the job's token, instead of C2D_JOB_TOKEN (Kubernetes: a Secret volume)"),
    ("C2D_FETCH_ALGORITHM_LOG", "1: pod_publish fetches the algorithm's log from the engine first (Kubernetes)"),
)

SETTINGS_CLASSES = (
    (ProviderSettings, "C2D_PROVIDER", "provider"),
    (OperatorSettings, "C2D_OPERATOR", "operator-service"),
    (EngineSettings, "C2D_ENGINE", "operator-engine"),
    (
        StagingSettings,
        "C2D_STAGING",
        "pod_config (staging) and the provider (trusted algorithms)",
    ),
)


def storage_settings() -> list[Setting]:
    defaults = StorageConfig()
    return [
        Setting(
            f"{StorageConfig.ENV_PREFIX}{field.name.upper()}",
            environment_form(getattr(defaults, field.name)),
            _STORAGE_MEANINGS[field.name],
            STORAGE,
        )
        for field in dataclasses.fields(StorageConfig)
    ]


def catalogue() -> list[Setting]:
    listed = [Setting(name, default, meaning, group) for name, default, meaning, group in _DIRECT]
    for cls, prefix, group in SETTINGS_CLASSES:
        listed += [
            Setting(name, environment_form(default), doc, group)
            for name, default, doc in settings.describe(cls, prefix)
        ]
    listed += storage_settings()
    listed += [Setting(name, "", meaning, POD) for name, meaning in _POD]
    return listed
