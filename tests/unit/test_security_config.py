"""``[server.tls]`` and ``[auth]`` in the agent's config: files read and checked at parse time,
every problem reported with its key path, tokens never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import cli
from agent.config import AuthToken, ConfigError, ServerTlsConfig, describe, parse_config, parse_tokens
from tests.certs import Pki, write

OPERATOR_TOKEN = "operator-token-9c2e71d4a0"
READ_TOKEN = "reader-token-5f3b8a61c7e2"


def parse(data: dict, tmp_path: Path):
    return parse_config({"base_dir": str(tmp_path / "base"), "host_id": "h", **data}, source="t",
                        relative_to=tmp_path)


def problems(data: dict, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path)
    return list(caught.value.problems)


# ---------------------------------------------------------------- tokens


def test_tokens_file_gives_each_token_its_role(tmp_path):
    tokens = write(tmp_path / "tokens", f"# role token\n\noperator {OPERATOR_TOKEN}\n  read-only\t{READ_TOKEN}  \n"
                   .encode())
    config = parse({"auth": {"tokens_file": "tokens"}}, tmp_path)
    assert config.auth.tokens_file == tokens
    assert config.auth.tokens == (AuthToken(role="operator", token=OPERATOR_TOKEN),
                                  AuthToken(role="read-only", token=READ_TOKEN))
    shown = repr(config) + json.dumps(describe(config))
    assert OPERATOR_TOKEN not in shown and READ_TOKEN not in shown
    assert describe(config)["auth"] == {"tokens_file": str(tokens), "tokens": "***"}


def test_no_auth_section_means_no_tokens(tmp_path):
    config = parse({}, tmp_path)
    assert config.auth.tokens is None and config.auth.tokens_file is None


def test_parse_tokens_reports_every_bad_line_without_quoting_it():
    text = "\n".join([
        f"operator {OPERATOR_TOKEN}",
        f"{READ_TOKEN} read-only",  # swapped: the "role" would be the token
        "operator short",
        f"operator {OPERATOR_TOKEN}",  # the same token again
        f"admin {READ_TOKEN}x",
        "operator",
        f"read-only {READ_TOKEN} extra",
        "operator tøken-with-non-ascii-0000",
    ])
    tokens, found = parse_tokens(text)
    assert tokens == (AuthToken(role="operator", token=OPERATOR_TOKEN),)
    assert found == [
        'line 2: the role must be "read-only" or "operator" (is the line "<role> <token>"?)',
        "line 3: the token is shorter than 16 characters",
        "line 4: the same token as on line 1",
        'line 5: the role must be "read-only" or "operator" (is the line "<role> <token>"?)',
        'line 6: must be "<role> <token>" (1 words found)',
        'line 7: must be "<role> <token>" (3 words found)',
        "line 8: the token must be printable ASCII without blanks",
    ]
    assert not [p for p in found if READ_TOKEN in p or OPERATOR_TOKEN in p]


def test_an_empty_tokens_file_is_a_problem_not_an_open_agent(tmp_path):
    write(tmp_path / "tokens", b"# nothing yet\n")
    assert problems({"auth": {"tokens_file": "tokens"}}, tmp_path) == [
        f'auth.tokens_file: {tmp_path / "tokens"} has no tokens (lines "<role> <token>")'
    ]


def test_an_auth_section_without_a_tokens_file_is_a_problem(tmp_path):
    assert problems({"auth": {"tokns_file": "x"}}, tmp_path) == [
        "auth.tokens_file: required in [auth] (leave [auth] out to run without tokens)",
        "auth.tokns_file: unknown key (did you mean 'tokens_file'?)",
    ]


def test_a_tokens_file_others_can_read_or_that_is_missing_is_a_problem(tmp_path):
    path = write(tmp_path / "tokens", f"operator {OPERATOR_TOKEN}\n".encode(), mode=0o640)
    assert problems({"auth": {"tokens_file": str(path)}}, tmp_path) == [
        f"auth.tokens_file: {path} is accessible by group or others (mode 0640); run: chmod 600 {path}"
    ]
    assert problems({"auth": {"tokens_file": "absent"}}, tmp_path) == [
        f"auth.tokens_file: cannot read {tmp_path / 'absent'}: No such file or directory"
    ]


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki():
    pytest.importorskip("cryptography")
    return Pki.new("config test CA")


@pytest.fixture
def tls_files(pki, tmp_path):
    cert, key = pki.issue("agent", dns=("localhost",), ips=("127.0.0.1",))
    return {
        "cert_file": str(write(tmp_path / "agent.pem", cert, mode=0o644)),
        "key_file": str(write(tmp_path / "agent.key", key)),
        "client_ca_file": str(write(tmp_path / "hub-ca.pem", pki.ca_cert, mode=0o644)),
    }


def test_server_tls_is_read_and_checked(tls_files, tmp_path):
    config = parse({"server": {"tls": tls_files}}, tmp_path)
    assert config.server.tls == ServerTlsConfig(**{k: Path(v) for k, v in tls_files.items()})
    without_ca = {k: v for k, v in tls_files.items() if k != "client_ca_file"}
    assert parse({"server": {"tls": without_ca}}, tmp_path).server.tls.client_ca_file is None
    assert describe(config)["server"]["tls"] == tls_files
    assert parse({}, tmp_path).server.tls is None


def test_server_tls_needs_a_certificate_and_its_key(tmp_path):
    assert problems({"server": {"tls": {"client_ca_file": "ca.pem", "cert": "x"}}}, tmp_path) == [
        "server.tls.cert_file: required in [server.tls]",
        "server.tls.key_file: required in [server.tls]",
        "server.tls.cert: unknown key (did you mean 'cert_file'?)",
    ]


def test_a_key_of_another_certificate_is_a_problem(pki, tls_files, tmp_path):
    _, other_key = pki.issue("other")
    files = dict(tls_files, key_file=str(write(tmp_path / "other.key", other_key)))
    assert problems({"server": {"tls": files}}, tmp_path) == [
        f"server.tls.key_file: {files['key_file']} does not match the certificate in {files['cert_file']}"
    ]


def test_unreadable_and_non_pem_files_are_problems_all_at_once(tls_files, tmp_path):
    files = dict(tls_files, cert_file=str(write(tmp_path / "garbage.pem", b"not a certificate\n")),
                 key_file=str(tmp_path / "missing.key"),
                 client_ca_file=str(write(tmp_path / "ca-garbage.pem", b"-----BEGIN NOTHING-----\n")))
    assert problems({"server": {"tls": files}}, tmp_path) == [
        f"server.tls.cert_file: no PEM certificate in {files['cert_file']}",
        f"server.tls.key_file: cannot read {files['key_file']}: No such file or directory",
        f"server.tls.client_ca_file: no PEM CA certificate in {files['client_ca_file']}",
    ]


def test_a_key_readable_by_others_or_encrypted_is_a_problem(tls_files, tmp_path):
    from cryptography.hazmat.primitives import serialization

    Path(tls_files["key_file"]).chmod(0o644)
    assert problems({"server": {"tls": tls_files}}, tmp_path) == [
        f"server.tls.key_file: {tls_files['key_file']} is accessible by others (mode 0644); "
        f"run: chmod o-rwx {tls_files['key_file']}"
    ]
    key = serialization.load_pem_private_key(Path(tls_files["key_file"]).read_bytes(), None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"passphrase"))
    files = dict(tls_files, key_file=str(write(tmp_path / "encrypted.key", encrypted)))
    assert problems({"server": {"tls": files}}, tmp_path) == [
        f"server.tls.key_file: {files['key_file']} is encrypted; the agent needs an unencrypted key"
    ]


def test_check_config_exits_2_naming_the_problem(pki, tls_files, tmp_path, capsys):
    _, other_key = pki.issue("other")
    other = write(tmp_path / "other.key", other_key)
    path = tmp_path / "agent.toml"
    path.write_text(f'host_id = "h"\nbase_dir = "{tmp_path / "base"}"\n[server.tls]\n'
                    f'cert_file = "{tls_files["cert_file"]}"\nkey_file = "{other}"\n')
    assert cli.main(["check-config", str(path)]) == 2
    assert "server.tls.key_file:" in capsys.readouterr().err
