"""The TypeScript SDK's checks of results against what the provider signed:
the Ed25519 signature of the results statement (made here by the
provider's own sealing code) and the size and sha256 of a downloaded file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

from services.provider.domain import sealing
from tests.sdk_typescript.node import interop

KEYS = sealing.ProviderKeys.generate()
OTHER_KEYS = sealing.ProviderKeys.generate()
BODY = b'{"mean_temperature": 11.25, "rows": 4, "warmest": "Nairobi"}'
DIGEST = hashlib.sha256(BODY).hexdigest()
# As the provider states it: proto3 JSON of the manifest, so file 0 has no
# "index" and sizes are strings.
STATEMENT = json.dumps(
    {
        "job_id": "job-1",
        "dataset_dids": ["did:op:" + "ab" * 32],
        "algorithm_did": "did:op:" + "cd" * 32,
        "results": {
            "files": [
                {"path": "result.json", "size": str(len(BODY)), "sha256": DIGEST, "kind": "RESULT_KIND_OUTPUT"},
                {
                    "index": 1,
                    "path": "algorithm.log",
                    "size": "17",
                    "sha256": "0" * 64,
                    "kind": "RESULT_KIND_ALGORITHM_LOG",
                },
            ],
            "storage": "local",
        },
    },
    sort_keys=True,
    separators=(",", ":"),
)


def ask(*questions: dict) -> list:
    return asyncio.run(interop(*questions))


def signed_results(statement: str, keys: sealing.ProviderKeys = KEYS) -> dict:
    return {
        "statementJson": statement,
        "signature": sealing.sign_bytes(keys, statement.encode()),
        "publicKey": keys.verify_key_hex,
    }


def verify(signed: dict, key: str = KEYS.verify_key_hex) -> dict:
    return {"op": "verifyStatement", "signedResults": signed, "signingPublicKey": key}


def test_a_statement_the_provider_signed_is_read_with_its_files():
    [answer] = ask(verify(signed_results(STATEMENT)))
    assert answer["statement"] == {
        "jobId": "job-1",
        "datasetDids": ["did:op:" + "ab" * 32],
        "algorithmDid": "did:op:" + "cd" * 32,
        "files": [
            {"index": 0, "path": "result.json", "size": str(len(BODY)), "sha256": DIGEST, "kind": "RESULT_KIND_OUTPUT"},
            {
                "index": 1,
                "path": "algorithm.log",
                "size": "17",
                "sha256": "0" * 64,
                "kind": "RESULT_KIND_ALGORITHM_LOG",
            },
        ],
    }


def test_a_changed_or_foreign_statement_is_refused():
    tampered = signed_results(STATEMENT)
    tampered["statementJson"] = STATEMENT.replace(DIGEST, "1" * 64)
    by_other_key = signed_results(STATEMENT, OTHER_KEYS)
    # A statement signed by another key that also claims to be the provider's key.
    impostor = {**by_other_key, "publicKey": KEYS.verify_key_hex}
    answers = ask(
        verify(tampered),
        verify(by_other_key),
        verify(impostor),
        verify({"statementJson": "", "signature": "", "publicKey": KEYS.verify_key_hex}),
    )
    assert answers[0]["error"] == "IntegrityError: the provider's signature of the results statement does not verify"
    assert answers[1]["error"].startswith(f"IntegrityError: the results are signed by key {OTHER_KEYS.verify_key_hex}")
    assert answers[2]["error"] == answers[0]["error"]
    assert answers[3]["error"].startswith("IntegrityError: the job has no signed results statement")


def chunks(*parts: tuple[int, bytes]) -> list[dict]:
    return [{"offset": str(offset), "base64": base64.b64encode(data).decode()} for offset, data in parts]


def check(parts: list[dict], size: int = len(BODY), sha256: str = DIGEST) -> dict:
    return {"op": "checkChunks", "file": {"path": "result.json", "size": str(size), "sha256": sha256}, "chunks": parts}


def test_a_download_is_taken_only_when_it_is_the_signed_bytes():
    whole = chunks((0, BODY[:10]), (10, BODY[10:]))
    answers = ask(
        check(whole),
        check(whole, sha256="2" * 64),
        check(chunks((0, BODY[:10]))),
        check(chunks((0, BODY), (len(BODY), b"more"))),
        check(chunks((0, BODY[:10]), (11, BODY[11:]))),
    )
    assert base64.b64decode(answers[0]["received"]) == BODY
    assert answers[1]["error"] == (
        f"IntegrityError: result.json: received {len(BODY)} bytes with sha256 {DIGEST};"
        f" the provider signed {len(BODY)} bytes with sha256 {'2' * 64}"
    )
    assert answers[2]["error"].startswith("IntegrityError: result.json: received 10 bytes")
    assert answers[3]["error"] == f"IntegrityError: result.json: more than the {len(BODY)} bytes the provider signed"
    assert answers[4]["error"] == "IntegrityError: result.json: a chunk at offset 11, expected 10"
