"""How messages name a repository (agent/repository.py ``Repository.label``, ``label_of``): the
configured local one as the API does, never by this host's path; a request's own as it gave it."""

from pathlib import Path

from agent.config import parse_config
from agent.repository import LocalSpec, RepositorySpec, S3Spec, label_of, resolve

PROJECT = "0b5f3a1e-8c2d-4e6f-9a7b-1c2d3e4f5a6b"


def config(tmp_path: Path, repository: dict | None = None):
    data = {"base_dir": str(tmp_path), **({"repository": repository} if repository else {})}
    return parse_config(data, source="test", relative_to=tmp_path)


def test_the_configured_local_repository_is_named_without_its_path(tmp_path):
    cfg = config(tmp_path)
    repo = resolve(RepositorySpec(password="pw"), PROJECT, cfg)
    assert repo.display == str(tmp_path / "state" / "repos" / f"project-{PROJECT}")  # the journal's key
    assert repo.label == f"the configured repository of project {PROJECT}"
    assert label_of(repo.display, PROJECT, cfg) == repo.label
    assert str(tmp_path) not in repo.label


def test_a_requests_own_repository_is_named_as_it_was_given(tmp_path):
    cfg = config(tmp_path)
    given = str(tmp_path / "elsewhere" / "repo")
    local = resolve(RepositorySpec(location=LocalSpec(path=given), password="pw"), PROJECT, cfg)
    assert local.label == f"repository {given}"
    assert label_of(given, PROJECT, cfg) == f"repository {given}"
    s3 = resolve(RepositorySpec(location=S3Spec(endpoint="http://127.0.0.1:9000", region="", bucket="bucket-eu", root="r/x",
                                                access_key_id="", secret_access_key=""), password="pw"), PROJECT, cfg)
    assert s3.label == "repository s3:http://127.0.0.1:9000/bucket-eu/r/x"


def test_a_configured_s3_repository_is_named_by_its_location(tmp_path):
    cfg = config(tmp_path, {"kind": "s3", "s3": {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1",
                                                 "bucket_prefix": "buckets"}})
    repo = resolve(RepositorySpec(password="pw"), PROJECT, cfg)
    assert repo.label == f"repository {repo.display}" and repo.label.startswith("repository s3:http://127.0.0.1:9000/")
    assert label_of(repo.display, PROJECT, cfg) == repo.label
