"""Both operator CLIs: every subcommand's --help shows an example of that very command, both
offer the same operator commands, and --json is accepted after any command."""

from __future__ import annotations

import argparse
import io
import shlex
from contextlib import redirect_stdout

import pytest

from agent import cli as agent_cli
from hub_client import cli as hub_cli
from hub_client.agent_cli import subcommands

PARSERS = {"buckets": hub_cli.build_parser, "buckets-agent": agent_cli.build_parser}
# What issue 8 asks both command lines to offer.
OPERATOR_COMMANDS = {"status", "snapshots", "ls", "cat", "backup", "restore", "verify", "ensure", "freeze", "thaw",
                     "move", "copy", "drain", "delete"}


def _walk():
    for prog, build in PARSERS.items():
        for path, parser in subcommands(build()).items():
            yield pytest.param(prog, path, parser, id=f"{prog} {path}")


def _words(line: str) -> list[str]:
    """The words of a command line, options and their values left out (``--agent X`` too)."""
    words, tokens = [], shlex.split(line, comments=True)
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token.startswith("-"):
            skip = token in ("--agent", "--config", "--store", "--buckets")
        else:
            words.append(token)
    return words


@pytest.mark.parametrize("prog, path, parser", list(_walk()))
def test_every_subcommand_help_has_an_example_of_itself(prog: str, path: str, parser: argparse.ArgumentParser):
    text = parser.format_help()
    assert "Example:" in text, f"`{prog} {path} --help` shows no example"
    example = text.split("Example:", 1)[1].strip().splitlines()[0]
    words = _words(example)
    assert words[0] == prog, example
    wanted = path.split()
    assert words[1:1 + len(wanted)] == wanted, f"the example of `{prog} {path}` runs another command: {example}"
    # The example parses as that command (the shell redirection of cat's example left out).
    argv = shlex.split(example.split(">")[0])[1:]
    parsed = PARSERS[prog]().parse_args(argv)
    assert parsed.command == wanted[0]


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_both_clis_offer_the_operator_commands(prog: str):
    top = {path for path in subcommands(PARSERS[prog]()) if " " not in path}
    assert OPERATOR_COMMANDS <= top, OPERATOR_COMMANDS - top


@pytest.mark.parametrize("prog, path, parser", [p for p in _walk() if p.values[1] not in ("serve",)])
def test_json_is_accepted_after_every_command(prog: str, path: str, parser: argparse.ArgumentParser):
    assert "--json" in parser.format_help()


def test_global_options_may_follow_the_command_and_are_not_reset_by_it():
    parse = hub_cli.build_parser().parse_args
    assert parse(["--json", "--agent", "h:1", "ls", "p", "latest"]).json is True
    after = parse(["ls", "p", "latest", "--json", "--agent", "h:2"])
    assert (after.json, after.agent) == (True, "h:2")
    plain = parse(["ls", "p", "latest"])
    assert (plain.json, plain.agent) == (False, "127.0.0.1:50051")
    assert parse(["hosts", "add", "a", "h:1", "--region", "eu", "--json"]).json is True
    host = agent_cli.build_parser().parse_args
    assert host(["--config", "a.toml", "status"]).config.name == "a.toml"
    assert host(["status", "--config", "b.toml"]).config.name == "b.toml"
    assert host(["serve"]).config is None and host(["check-config", "c.toml"]).config.name == "c.toml"


@pytest.mark.parametrize("argv", [["backup"], ["ls", "p"], ["nope"], ["delete", "p"], ["move", "p"]])
def test_bad_usage_exits_2(argv: list[str], capsys):
    for main in (hub_cli.main, agent_cli.main):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2


def test_move_on_the_host_prints_the_hub_command_and_exits_2(capsys):
    code = agent_cli.main(["--json", "move", "6f1c2a9e-0b6f-4e2d-9a57-3c8d1e4f7b20", "--to", "host-b", "--force"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "buckets move 6f1c2a9e-0b6f-4e2d-9a57-3c8d1e4f7b20 --to host-b --force" in err
    import json
    assert json.loads(out)["hub_command"].startswith("buckets move ")


def test_local_address_from_the_config(tmp_path):
    from agent.config import parse_config

    def config(listen: str, port_file: str | None = None):
        server = {"listen": listen} | ({"port_file": port_file} if port_file else {})
        return parse_config({"host_id": "h", "base_dir": str(tmp_path), "server": server}, source="t",
                            relative_to=tmp_path)

    assert agent_cli.local_address(config("127.0.0.1:50051")) == "127.0.0.1:50051"
    assert agent_cli.local_address(config("0.0.0.0:7000")) == "127.0.0.1:7000"
    assert agent_cli.local_address(config("[::]:7000")) == "[::1]:7000"
    port_file = tmp_path / "agent.port"
    with pytest.raises(agent_cli.LocalAgentError, match="is the agent running"):
        agent_cli.local_address(config("127.0.0.1:0", str(port_file)))
    port_file.write_text("43210\n")
    assert agent_cli.local_address(config("127.0.0.1:0", str(port_file))) == "127.0.0.1:43210"
    with pytest.raises(agent_cli.LocalAgentError, match="--agent"):
        agent_cli.local_address(config("127.0.0.1:0"))


def test_top_level_help_documents_the_exit_codes():
    for build in PARSERS.values():
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit):
            build().parse_args(["--help"])
        assert "Exit codes" in out.getvalue() and "3  in progress" in out.getvalue()


def test_exit_codes_of_refused_calls():
    import grpc

    from hub_client.agent_cli import exit_code_of
    from hub_client.client import AgentError

    def code(status: grpc.StatusCode) -> int:
        return exit_code_of(AgentError(status, "x"))

    assert code(grpc.StatusCode.ABORTED) == 3
    for status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED):
        assert code(status) == 2, status
    for status in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL):
        assert code(status) == 1, status


def test_the_local_agent_token_comes_from_its_config_unless_one_is_given(tmp_path):
    from agent.config import parse_config
    from hub_client.client import ClientConfig

    tokens = tmp_path / "tokens"
    tokens.write_text("read-only r3ad-only-token-0123456789\noperator 0perator-token-0123456789\n")
    tokens.chmod(0o600)
    config = parse_config({"host_id": "h", "base_dir": str(tmp_path), "auth": {"tokens_file": str(tokens)}},
                          source="t", relative_to=tmp_path)
    base = ClientConfig(target="127.0.0.1:1")
    assert agent_cli.local_client_config(base, config).token == "0perator-token-0123456789"
    given = ClientConfig(target="127.0.0.1:1", token="given-token-0123456789")
    assert agent_cli.local_client_config(given, config).token == "given-token-0123456789"
    assert agent_cli.local_client_config(base, None) is base
