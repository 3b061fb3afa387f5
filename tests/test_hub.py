"""Pushing a converted checkpoint to the Hub, its model card, and every failure path.

The Hub is not reachable here. The tests drive the real ``huggingface_hub.HfApi`` with its HTTP
layer replaced: ``huggingface_hub.set_client_factory`` installs an httpx client whose transport is
``FakeHub`` (an in-process fake of the Hub endpoints an upload uses, recording every request).
That client has none of huggingface_hub's request hooks, so it works under ``HF_HUB_OFFLINE=1``;
one test puts the default client back to check the offline-mode error.

Regenerate docs/example-model-card.md with ``MONARCH_CONVERT_REGEN_DOCS=1 pytest tests/test_hub.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import ModelCard, ModelCardData  # noqa: E402
from huggingface_hub.utils import _http  # noqa: E402

from monarch_convert.errors import MonarchConvertError  # noqa: E402
from monarch_convert.hub.card import build_model_card  # noqa: E402
from monarch_convert.hub.cli import push_converted_dir  # noqa: E402
from monarch_convert.hub.pipeline_tags import infer_pipeline_tag  # noqa: E402
from monarch_convert.hub.upload import push_to_hub  # noqa: E402

# huggingface_hub's own LFS PUT passes raw bytes as data= (its httpx warns); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>'.*:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CARD = ROOT / "docs" / "example-model-card.md"
TOKEN = "hf_TESTtokenDoNotLeak0123456789"
ENDPOINT = "https://huggingface.co"
# The httpx flavour this huggingface_hub uses (httpx in 1.x, httpx2 in 2.x).
HTTPX = getattr(_http, "httpx2", None) or _http.httpx


# ---------------------------------------------------------------------------------------------
# A sample converted folder, as `monarch-convert MODEL --out DIR` and `monarch-convert eval` write it
# ---------------------------------------------------------------------------------------------
SETTINGS = {"block_size": 16, "num_steps": 1, "pad_type": "post", "layers": [0, 1, 2, 3, 8, 9, 10, 11],
            "backend": "auto"}


def make_converted_dir(path: Path, *, evaluation: bool = True,
                       source: str = "textattack/bert-base-uncased-SST-2") -> Path:
    """A converted BERT text classifier (12 layers, 8 converted), with an illustrative evaluation."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "monarch_attention": {"monarch_convert_version": "0.1.0", "settings": dict(SETTINGS)},
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4)
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordPiece"}}))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    modules = [
        {
            "name": f"bert.encoder.layer.{i}.attention.self",
            "layer": i,
            "status": "converted" if i in SETTINGS["layers"] else "skipped",
            "reason": None if i in SETTINGS["layers"] else "not in layers",
        }
        for i in range(12)
    ]
    flops = {"seq_len": 512, "softmax": 9.66e9, "monarch": 2.83e9, "ratio": 0.293}
    conversion = {
        "monarch_convert_version": "0.1.0",
        "source_model": source,
        "model_type": "bert",
        "settings": dict(SETTINGS),
        "modules": modules,
        "attention_flops": flops,
    }
    (path / "conversion.json").write_text(json.dumps(conversion, indent=2))
    if evaluation:
        report = {
            "task": "text-classification",
            "dataset": {"id": "nyu-mll/glue", "name": "GLUE SST-2", "config": "sst2", "split": "validation"},
            "samples": 872,
            "seed": 0,
            "settings": dict(SETTINGS),
            "metrics": [
                {"name": "accuracy", "original": 0.9243, "converted": 0.9106, "delta": -0.0137},
                {"name": "f1", "original": 0.9251, "converted": 0.9120, "delta": -0.0131},
            ],
            "attention_flops": flops,
            "wall_time_s": 41.2,
            "device": "cuda",
            "dtype": "float16",
            "versions": {"torch": "2.11", "transformers": "5.17"},
        }
        (path / "evaluation.json").write_text(json.dumps(report, indent=2))
        (path / "evaluation.md").write_text("# Evaluation\n\n| metric | original | converted |\n")
    return path


def snapshot(path: Path) -> dict[str, str]:
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# A fake Hub behind huggingface_hub's HTTP client
# ---------------------------------------------------------------------------------------------
class FakeHub:
    """The Hub endpoints an upload uses: create repo, create branch, validate YAML, preupload, commit.

    Every request is recorded in ``requests`` as (method, path, query dict, headers, body bytes).
    ``fail[(method, path_suffix)] = (status, json_body)`` or an exception instance makes that
    endpoint fail; ``existing_repos`` answer 409 to create.
    """

    def __init__(self, user: str = "alice"):
        self.user = user
        self.requests: list[dict] = []
        self.fail: dict[tuple[str, str], object] = {}
        self.existing_repos: set[str] = set()
        self.commits: list[dict] = []
        self.lfs = False  # True: *.safetensors go through the LFS batch API ("basic" transfer)
        self.lfs_objects: dict[str, bytes] = {}

    # -- plumbing
    def client(self):
        return HTTPX.Client(transport=HTTPX.MockTransport(self.handle), follow_redirects=True)

    def _json(self, status: int, body: dict, headers: dict | None = None):
        return HTTPX.Response(status, json=body, headers=headers or {})

    def calls(self, method: str, contains: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and contains in r["path"]]

    def handle(self, request):
        body = request.read()
        path = request.url.path
        record = {
            "method": request.method,
            "path": path,
            "query": dict(request.url.params),
            "headers": dict(request.headers),
            "body": body,
        }
        self.requests.append(record)
        for (method, suffix), failure in self.fail.items():
            if method == request.method and path.endswith(suffix):
                if isinstance(failure, BaseException):
                    raise failure
                status, payload = failure
                return self._json(status, payload)
        auth = request.headers.get("authorization")
        if auth is None and not path.startswith("/fake-lfs/"):  # storage URLs are pre-signed
            return self._json(401, {"error": "Invalid username or password."})

        if request.method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
            if repo_id in self.existing_repos:
                return self._json(409, {"error": "You already created this model repo", "url": f"{ENDPOINT}/{repo_id}"})
            self.existing_repos.add(repo_id)
            return self._json(200, {"url": f"{ENDPOINT}/{repo_id}", "name": repo_id, "id": "abc"})
        if request.method == "POST" and path == "/api/validate-yaml":
            return self._json(200, {})
        if request.method == "POST" and "/branch/" in path:
            return self._json(200, {})
        if request.method == "POST" and "/preupload/" in path:
            files = json.loads(body)["files"]

            def mode(path):
                return "lfs" if self.lfs and path.endswith(".safetensors") else "regular"

            return self._json(
                200,
                {"files": [{"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False, "oid": None}
                           for f in files]},
            )
        if request.method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            actions = [
                {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{ENDPOINT}/fake-lfs/{o['oid']}"}}}
                for o in objects
            ]
            return self._json(200, {"transfer": "basic", "objects": actions})
        if request.method == "PUT" and path.startswith("/fake-lfs/"):
            self.lfs_objects[path.rsplit("/", 1)[1]] = body
            return HTTPX.Response(200)
        if request.method == "POST" and "/commit/" in path:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {}
            for x in lines:
                if x["key"] == "file":
                    files[x["value"]["path"]] = base64.b64decode(x["value"]["content"])
                elif x["key"] == "lfsFile":
                    files[x["value"]["path"]] = self.lfs_objects.get(x["value"]["oid"], b"<missing LFS object>")
            repo_id = path.split("/api/models/", 1)[1].split("/commit/", 1)[0]
            self.commits.append({"repo_id": repo_id, "header": header, "files": files, "path": path,
                                 "query": record["query"]})
            oid = "f" * 40
            response = {"commitUrl": f"{ENDPOINT}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
            if record["query"].get("create_pr") == "1":
                response["pullRequestUrl"] = f"{ENDPOINT}/{repo_id}/discussions/1"
            return self._json(200, response)
        return self._json(404, {"error": f"fake hub: no route for {request.method} {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    fake = FakeHub()
    saved = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(fake.client)
    yield fake
    huggingface_hub.set_client_factory(saved)


@pytest.fixture
def converted(tmp_path):
    return make_converted_dir(tmp_path / "bert-sst2-monarch")


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path):
    """No token from the machine running the tests: HF_TOKEN unset, an empty login cache."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    token_file = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_file))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(token_file.parent / "stored_tokens"))


def parse_card(text: str | bytes) -> ModelCard:
    card = ModelCard(text.decode() if isinstance(text, bytes) else text)
    # Round trip through ModelCardData: the metadata is valid card data, eval_results included.
    ModelCardData(**card.data.to_dict())
    return card


# ---------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------
def test_push_uploads_folder_and_card_in_one_commit(fake_hub, converted):
    before = snapshot(converted)
    info = push_to_hub(converted, "alice/bert-sst2-monarch", token=TOKEN, commit_message="Add Monarch BERT")

    assert info.commit_url == f"{ENDPOINT}/alice/bert-sst2-monarch/commit/{'f' * 40}"
    assert info.pr_url is None
    assert len(fake_hub.commits) == 1
    commit = fake_hub.commits[0]
    assert commit["repo_id"] == "alice/bert-sst2-monarch"
    assert commit["path"].endswith("/commit/main")
    assert commit["header"]["summary"] == "Add Monarch BERT"
    # Every file of DIR, byte for byte, plus the generated card.
    assert set(commit["files"]) == set(before) | {"README.md"}
    for rel in before:
        assert commit["files"][rel] == (converted / rel).read_bytes()
    card = parse_card(commit["files"]["README.md"])
    assert card.data.base_model == "textattack/bert-base-uncased-SST-2"
    assert 'monarch_convert.from_pretrained("alice/bert-sst2-monarch")' in card.text
    # The card's YAML went through the Hub's validation endpoint first.
    assert len(fake_hub.calls("POST", "/api/validate-yaml")) == 1
    # Auth: the token is sent to the Hub as a bearer token, on every request.
    assert fake_hub.requests and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in fake_hub.requests)
    # The local folder is untouched (no README.md written into it).
    assert snapshot(converted) == before


@pytest.fixture
def lfs_without_xet(fake_hub, monkeypatch):
    """Weights go through the LFS batch API with the plain HTTP ("basic") transfer, not Xet."""
    fake_hub.lfs = True
    for module in ("huggingface_hub._commit_api", "huggingface_hub.hf_api"):
        monkeypatch.setattr(f"{module}.is_xet_available", lambda: False, raising=False)
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub backs off on LFS errors
    return fake_hub


def test_push_weights_through_lfs(lfs_without_xet, converted):
    fake_hub = lfs_without_xet
    push_to_hub(converted, "alice/m", token=TOKEN)
    weights = (converted / "model.safetensors").read_bytes()
    assert fake_hub.calls("POST", "/alice/m.git/info/lfs/objects/batch")
    assert list(fake_hub.lfs_objects.values()) == [weights]
    assert fake_hub.commits[0]["files"]["model.safetensors"] == weights
    # The token goes to the Hub API only, never to the storage URL.
    assert all("authorization" not in r["headers"] for r in fake_hub.calls("PUT", "/fake-lfs/"))


def test_lfs_upload_failure(lfs_without_xet, converted):
    fake_hub = lfs_without_xet
    fake_hub.fail[("PUT", hashlib.sha256((converted / "model.safetensors").read_bytes()).hexdigest())] = (
        HTTPX.WriteError("connection reset by peer")
    )
    before = snapshot(converted)
    with pytest.raises(MonarchConvertError, match="network error") as info:
        push_to_hub(converted, "alice/m", token=TOKEN)
    assert_clean_failure(info.value, converted, before, retry="monarch-convert upload")
    assert not fake_hub.commits


def test_push_default_commit_message_and_token_from_env(fake_hub, converted, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push_to_hub(converted, "alice/m")
    commit = fake_hub.commits[0]
    assert commit["header"]["summary"] == (
        "textattack/bert-base-uncased-SST-2 converted to MonarchAttention with monarch-convert 0.1.0"
    )
    assert fake_hub.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_push_token_from_login_cache(fake_hub, converted):
    Path(huggingface_hub.constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(huggingface_hub.constants.HF_TOKEN_PATH).write_text(TOKEN)
    push_to_hub(converted, "alice/m")
    assert fake_hub.commits and fake_hub.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_private_revision_and_create_pr_pass_through(fake_hub, converted):
    info = push_to_hub(converted, "alice/m", private=True, revision="monarch-b16", create_pr=True, token=TOKEN)

    create = json.loads(fake_hub.calls("POST", "/api/repos/create")[0]["body"])
    assert create["name"] == "m" and create["type"] == "model"
    assert create.get("private") is True or create.get("visibility") == "private"
    branch = fake_hub.calls("POST", "/api/models/alice/m/branch/monarch-b16")
    assert len(branch) == 1
    commit = fake_hub.commits[0]
    assert commit["path"] == "/api/models/alice/m/commit/monarch-b16"
    assert commit["query"].get("create_pr") == "1"
    assert info.pr_url == f"{ENDPOINT}/alice/m/discussions/1"
    # The card of a PR documents loading the merged model (no revision pinned).
    assert 'from_pretrained("alice/m")' in commit["files"]["README.md"].decode()


def test_revision_without_pr_pins_the_branch_in_the_snippet(fake_hub, converted):
    push_to_hub(converted, "alice/m", revision="exp", token=TOKEN)
    commit = fake_hub.commits[0]
    assert commit["path"] == "/api/models/alice/m/commit/exp" and "create_pr" not in commit["query"]
    assert 'monarch_convert.from_pretrained("alice/m", revision="exp")' in commit["files"]["README.md"].decode()
    create = json.loads(fake_hub.calls("POST", "/api/repos/create")[0]["body"])
    assert create.get("private") in (None, False) and create.get("visibility") in (None, "public")


def test_push_to_existing_repo_and_own_readme_kept(fake_hub, converted):
    fake_hub.existing_repos.add("alice/m")
    (converted / "README.md").write_text("---\nlicense: mit\n---\n# my own card\n")
    push_to_hub(converted, "alice/m", token=TOKEN)
    assert fake_hub.commits[0]["files"]["README.md"] == (converted / "README.md").read_bytes()


def test_hidden_files_are_not_uploaded(fake_hub, converted):
    (converted / ".cache").mkdir()
    (converted / ".cache" / "x.lock").write_text("x")
    (converted / ".DS_Store").write_text("x")
    push_to_hub(converted, "alice/m", token=TOKEN)
    assert not [p for p in fake_hub.commits[0]["files"] if p.startswith(".") or "/." in p]


def test_api_test_double_seam(converted):
    """Any object with HfApi's create_repo / create_branch / create_commit can be injected."""

    class Double:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kw):
            self.calls.append(("create_repo", repo_id, kw))
            return f"{ENDPOINT}/{repo_id}"

        def create_branch(self, repo_id, **kw):
            self.calls.append(("create_branch", repo_id, kw))

        def create_commit(self, repo_id, **kw):
            self.calls.append(("create_commit", repo_id, kw))
            return "commit-info"

    double = Double()
    assert push_to_hub(converted, "alice/m", token=TOKEN, api=double, revision="b") == "commit-info"
    assert [c[0] for c in double.calls] == ["create_repo", "create_branch", "create_commit"]
    commit_kw = double.calls[2][2]
    assert commit_kw["revision"] == "b" and commit_kw["create_pr"] is False and commit_kw["token"] == TOKEN
    assert {op.path_in_repo for op in commit_kw["operations"]} >= {"config.json", "conversion.json", "README.md"}


# ---------------------------------------------------------------------------------------------
# Failures: one line, no token, DIR intact, a retry hint
# ---------------------------------------------------------------------------------------------
def assert_clean_failure(exc: MonarchConvertError, converted: Path, before: dict, *, retry: str):
    message = str(exc)
    assert "\n" not in message
    assert TOKEN not in message and "hf_TEST" not in message
    assert retry in message
    assert f"monarch-convert upload {converted}" in message
    assert snapshot(converted) == before


@pytest.mark.parametrize(
    "failure, expected",
    [
        ((("POST", "/api/repos/create"), (401, {"error": "Invalid credentials in Authorization header"})), "401"),
        ((("POST", "/api/repos/create"),
          (403, {"error": "You don't have the rights to create a model under this namespace"})), "403"),
        ((("POST", "/commit/main"), (403, {"error": "Forbidden: pass a write token"})), "no write access"),
        ((("POST", "/commit/main"), (400, {"error": "Your push was rejected because it contains binary files"})),
         "rejected"),
        ((("POST", "/commit/main"), (413, {"error": "Payload too large"})), "too large"),
        ((("POST", "/commit/main"), (500, {"error": "Internal Error"})), "server error"),
        ((("POST", "/api/validate-yaml"), (400, {"errors": [{"message": '"base_model" is invalid'}]})),
         "model card's metadata"),
        ((("POST", "/api/repos/create"), HTTPX.ConnectError("[Errno -3] Temporary failure in name resolution")),
         "network error"),
        ((("POST", "/commit/main"), HTTPX.ReadTimeout("timed out")), "network error"),
    ],
    ids=["401", "403-create", "403-commit", "400-rejected", "413", "500", "bad-yaml", "connect", "timeout"],
)
def test_failures_are_one_line_with_retry_hint(fake_hub, converted, failure, expected, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)  # in case huggingface_hub backs off
    (key, value) = failure
    fake_hub.fail[key] = value
    before = snapshot(converted)
    with pytest.raises(MonarchConvertError) as info:
        push_to_hub(converted, "alice/m", token=TOKEN, revision=None)
    assert expected in str(info.value)
    assert_clean_failure(info.value, converted, before, retry="monarch-convert upload")
    assert not fake_hub.commits


def test_server_message_echoing_the_token_is_scrubbed(fake_hub, converted):
    fake_hub.fail[("POST", "/commit/main")] = (400, {"error": f"bad request from token {TOKEN}"})
    before = snapshot(converted)
    with pytest.raises(MonarchConvertError) as info:
        push_to_hub(converted, "alice/m", token=TOKEN)
    assert_clean_failure(info.value, converted, before, retry="monarch-convert upload")


def test_retry_hint_repeats_the_options(fake_hub, converted):
    fake_hub.fail[("POST", "/api/repos/create")] = (401, {"error": "Invalid credentials"})
    before = snapshot(converted)
    with pytest.raises(MonarchConvertError) as info:
        push_to_hub(converted, "alice/m", token=TOKEN, private=True, revision="exp", create_pr=True)
    assert_clean_failure(
        info.value, converted, before,
        retry=f"monarch-convert upload {converted} alice/m --private --revision exp --create-pr",
    )


def test_no_token(fake_hub, converted):
    before = snapshot(converted)
    with pytest.raises(MonarchConvertError) as info:
        push_to_hub(converted, "alice/m")
    assert "no Hugging Face token" in str(info.value) and "HF_TOKEN" in str(info.value)
    assert_clean_failure(info.value, converted, before, retry="monarch-convert upload")
    assert fake_hub.requests == []


def test_offline_mode_is_reported(converted, monkeypatch):
    """With huggingface_hub's own client, HF_HUB_OFFLINE blocks the request: say so."""
    saved = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(_http.default_client_factory)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    try:
        before = snapshot(converted)
        with pytest.raises(MonarchConvertError) as info:
            push_to_hub(converted, "alice/m", token=TOKEN)
        assert "HF_HUB_OFFLINE" in str(info.value)
        assert_clean_failure(info.value, converted, before, retry="monarch-convert upload")
    finally:
        huggingface_hub.set_client_factory(saved)


def test_invalid_repo_id_and_not_a_converted_dir(fake_hub, converted, tmp_path):
    with pytest.raises(MonarchConvertError, match="invalid repository id"):
        push_to_hub(converted, "alice/bad--name/x", token=TOKEN)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(MonarchConvertError, match="conversion.json is missing"):
        push_to_hub(tmp_path / "plain", "alice/m", token=TOKEN)
    with pytest.raises(MonarchConvertError, match="is not a folder"):
        push_to_hub(tmp_path / "nope", "alice/m", token=TOKEN)
    assert fake_hub.requests == []


# ---------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------
def test_card_metadata_and_body(converted):
    card = parse_card(str(build_model_card(converted, "alice/bert-sst2-monarch")))
    data = card.data
    assert data.base_model == "textattack/bert-base-uncased-SST-2"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-classification"
    assert "monarch-attention" in data.tags and "bert" in data.tags
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"accuracy", "f1"}
    acc = results["accuracy"]
    assert acc.metric_value == pytest.approx(0.9106)
    assert (acc.task_type, acc.dataset_type, acc.dataset_config, acc.dataset_split) == (
        "text-classification",
        "nyu-mll/glue",
        "sst2",
        "validation",
    )
    assert data.model_name == "bert-sst2-monarch"
    text = card.text
    assert "pip install monarch-convert" in text
    assert 'model = monarch_convert.from_pretrained("alice/bert-sst2-monarch")' in text
    assert 'AutoTokenizer.from_pretrained("alice/bert-sst2-monarch")' in text
    assert "| accuracy | 0.9243 | 0.9106 | -0.0137 |" in text
    assert "| block_size | 16 |" in text and "| layers | 0-3, 8-11 |" in text
    assert "Converted 8 of 12 attention modules; left unchanged:" in text
    assert "| skipped | not in layers | 4 | 4-7 |" in text
    assert "29.3% of softmax" in text


def test_card_without_evaluation_and_with_sparse_reports(tmp_path):
    path = make_converted_dir(tmp_path / "d", evaluation=False, source=str(tmp_path / "local-model"))
    conversion = json.loads((path / "conversion.json").read_text())
    for key in ("modules", "attention_flops", "monarch_convert_version", "settings"):
        conversion.pop(key)
    (path / "conversion.json").write_text(json.dumps(conversion))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (path / name).unlink()
    (path / "preprocessor_config.json").write_text("{}")
    card = parse_card(str(build_model_card(path, "bob/m")))
    assert card.data.base_model is None  # a local path is no Hub id
    assert str(tmp_path) not in str(card) and "`local-model (local folder)`" in card.text
    assert card.data.eval_results is None
    assert "## Evaluation" not in card.text
    assert "| block_size | 16 |" in card.text  # settings from config.json's monarch_attention
    assert "AutoTokenizer" not in card.text and 'AutoImageProcessor.from_pretrained("bob/m")' in card.text


def test_card_with_unusual_evaluation_fields(tmp_path):
    path = make_converted_dir(tmp_path / "d")
    report = json.loads((path / "evaluation.json").read_text())
    report["dataset"] = "imdb"
    report["task"] = "sentiment"
    report["metrics"] = [{"name": "Accuracy", "original": 0.9, "converted": None}, {"name": "loss"}, "junk"]
    (path / "evaluation.json").write_text(json.dumps(report))
    card = parse_card(str(build_model_card(path, "bob/m")))
    assert card.data.eval_results is None  # no numeric converted value
    assert "| Accuracy | 0.9000 | - | - |" in card.text
    (path / "evaluation.json").write_text("{not json")
    card = parse_card(str(build_model_card(path, "bob/m")))
    assert "## Evaluation" not in card.text


@pytest.mark.parametrize(
    "architectures, model_type, tag",
    [
        (["BertForSequenceClassification"], "bert", "text-classification"),
        (["RobertaForSequenceClassification"], "roberta", "text-classification"),
        (["ViTForImageClassification"], "vit", "image-classification"),
        (["RobertaForQuestionAnswering"], "roberta", "question-answering"),
        (["BertModel"], "bert", "feature-extraction"),
        (["ViTModel"], "vit", "image-feature-extraction"),
        (["BartForConditionalGeneration"], "bart", "summarization"),
        (["BertForMaskedLM"], "bert", "fill-mask"),
        (["BertForTokenClassification"], "bert", "token-classification"),
        (["SomethingElse"], "x", None),
        (None, None, None),
    ],
)
def test_pipeline_tag_table(architectures, model_type, tag):
    assert infer_pipeline_tag(architectures, model_type) == tag


def test_example_card_in_docs_is_generated(tmp_path):
    path = make_converted_dir(tmp_path / "bert-base-uncased-sst2-monarch")
    card = build_model_card(path, "your-name/bert-base-uncased-sst2-monarch")
    rendered = render_example_doc(str(card))
    if os.environ.get("MONARCH_CONVERT_REGEN_DOCS"):
        EXAMPLE_CARD.parent.mkdir(exist_ok=True)
        EXAMPLE_CARD.write_text(rendered)
    assert EXAMPLE_CARD.read_text() == rendered, "regenerate with MONARCH_CONVERT_REGEN_DOCS=1 pytest tests/test_hub.py"


def render_example_doc(card_text: str) -> str:
    _, front, body = card_text.split("---\n", 2)
    return (
        "# Example model card\n\n"
        "What `monarch-convert upload DIR REPO_ID` (or `--push-to-hub REPO_ID`) puts in the repo's `README.md`.\n"
        "Generated by `build_model_card` from the sample folder in `tests/test_hub.py` (a BERT SST-2\n"
        "classifier; **the evaluation numbers are illustrative, not a measurement**). Regenerate with\n"
        "`MONARCH_CONVERT_REGEN_DOCS=1 pytest tests/test_hub.py -k example_card`.\n\n"
        "## Metadata (the card's YAML front matter)\n\n"
        f"```yaml\n{front}```\n\n"
        "## Body\n\n"
        "<!-- the card body, verbatim -->\n\n"
        f"{body.lstrip()}"
    )


# ---------------------------------------------------------------------------------------------
# The CLI: `monarch-convert upload` and the convert command's --push-to-hub helper
# ---------------------------------------------------------------------------------------------
def test_upload_command_through_the_cli(fake_hub, converted, monkeypatch, capsys):
    cli = pytest.importorskip("monarch_convert.cli")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["upload", str(converted), "alice/m", "--private", "--revision", "exp", "--create-pr"])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    assert "Opened pull request: https://huggingface.co/alice/m/discussions/1" in out.out
    assert fake_hub.commits[0]["path"] == "/api/models/alice/m/commit/exp"
    assert TOKEN not in out.out + out.err

    fake_hub.fail[("POST", "/api/repos/create")] = (403, {"error": "no rights"})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["upload", str(converted), "alice/m"])
    out = capsys.readouterr()
    assert exit_info.value.code != 0
    error_lines = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "403" in error_lines[0] and "monarch-convert upload" in error_lines[0]
    assert TOKEN not in out.out + out.err


def test_push_converted_dir_prints_progress(fake_hub, converted):
    lines = []
    push_converted_dir(converted, "alice/m", token=TOKEN, echo=lines.append)
    assert lines[0].startswith("Uploading 8 files") and "https://huggingface.co/alice/m" in lines[0]
    assert lines[-1] == f"Uploaded: {ENDPOINT}/alice/m/commit/{'f' * 40}"


def test_hub_module_imports_only_typer_and_stdlib():
    code = (
        "import sys, monarch_convert.hub.card, monarch_convert.hub.cli, monarch_convert.hub.upload; "
        "heavy = [m for m in ('huggingface_hub', 'torch', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lazy_exports():
    import monarch_convert

    assert monarch_convert.push_to_hub is push_to_hub
    assert monarch_convert.build_model_card is build_model_card


# ---------------------------------------------------------------------------------------------
# Loading what was pushed, by Hub id and revision
# ---------------------------------------------------------------------------------------------
def _serve_commits_as_hub_cache(fake: FakeHub, cache: Path) -> None:
    """Lay the fake Hub's commits out as huggingface_hub's cache (refs/<branch> -> snapshot), which is
    what a download of that revision produces; HF_HUB_OFFLINE=1 then resolves ids and revisions from it."""
    for i, commit in enumerate(fake.commits):
        repo = cache / ("models--" + commit["repo_id"].replace("/", "--"))
        branch = commit["path"].rsplit("/commit/", 1)[1]
        sha = f"{i + 1:040x}"
        for rel, content in commit["files"].items():
            target = repo / "snapshots" / sha / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(sha)


def test_pushed_checkpoint_loads_by_id_and_revision(fake_hub, tmp_path):
    import monarch_convert

    try:
        convert, from_pretrained = monarch_convert.convert, monarch_convert.from_pretrained
    except (AttributeError, ImportError) as exc:
        pytest.skip(f"conversion / loading not available yet: {exc}")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    expected = {}
    for branch, block_size in (("main", 4), ("exp", 2)):
        torch.manual_seed(0)
        model = transformers.BertModel(config).eval()
        convert(model, block_size=block_size)
        with torch.no_grad():
            expected[branch] = model(input_ids=ids).last_hidden_state
        out = tmp_path / f"converted-{branch}"
        model.save_pretrained(out)
        (out / "conversion.json").write_text(
            json.dumps({"source_model": "tiny-bert", "model_type": "bert", "settings": {"block_size": block_size}})
        )
        push_to_hub(out, "alice/tiny-monarch", revision=None if branch == "main" else branch, token=TOKEN)
    assert [c["path"].rsplit("/", 1)[1] for c in fake_hub.commits] == ["main", "exp"]

    cache = tmp_path / "hub-cache"
    _serve_commits_as_hub_cache(fake_hub, cache)
    for branch, kwargs in (("exp", {"revision": "exp"}), ("main", {})):
        loaded = from_pretrained("alice/tiny-monarch", cache_dir=str(cache), **kwargs).eval()
        saved = loaded.config.monarch_attention
        assert saved.get("settings", saved)["block_size"] == (2 if branch == "exp" else 4)
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, expected[branch], rtol=0, atol=0)


def test_card_with_evaluator_task_names_and_local_dataset(tmp_path):
    path = make_converted_dir(tmp_path / "d")
    data_file = tmp_path / "secret-home" / "polarity.csv"
    data_file.parent.mkdir()
    data_file.write_text("label,text\n")
    report = json.loads((path / "evaluation.json").read_text())
    report.update(
        task="sentence-embedding",
        dataset=str(data_file),
        metrics=[{"name": "top1_agreement", "original": 100.0, "converted": 97.5, "delta": -2.5}],
    )
    (path / "evaluation.json").write_text(json.dumps(report))
    card = parse_card(str(build_model_card(path, "bob/m")))
    (result,) = card.data.eval_results
    assert (result.task_type, result.dataset_type, result.metric_value) == ("feature-extraction", "polarity.csv", 97.5)
    assert "secret-home" not in str(card)
    assert "| top1_agreement | 100.00 | 97.50 | -2.50 |" in card.text
