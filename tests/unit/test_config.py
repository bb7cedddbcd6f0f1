"""Unit tests for ``corral.config``: defaults, validation, sources and their precedence."""

from __future__ import annotations

import dataclasses
import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from corral.config import (
    FIELD_NAMES,
    CertRequirement,
    ExhaustedAction,
    Lifespan,
    LogFormat,
    ServerConfig,
    field_default,
    field_help,
    field_repeats,
    field_type,
)
from corral.config_sources import (
    LoadedConfig,
    describe_unknown_variable,
    find_config_file,
    load_config,
    read_config_file,
    read_environment,
)
from corral.config_values import parse_field
from corral.errors import ConfigError, ExitCode
from corral.runtime import WorkerMode


def _load(
    cli: dict[str, object] | None = None,
    *,
    environ: dict[str, str] | None = None,
    config_path: Path | None = None,
    cwd: Path,
) -> LoadedConfig:
    return load_config(cli or {}, config_path=config_path, environ=environ or {}, cwd=cwd)


# --- Defaults -----------------------------------------------------------------------


def test_defaults() -> None:
    cfg = ServerConfig()
    assert cfg.host == "127.0.0.1"
    assert cfg.port == 8000
    assert cfg.uds is None
    assert cfg.workers == 1
    assert cfg.mode is None
    assert cfg.max_restarts == 5
    assert cfg.restart_window == 60.0
    assert cfg.backoff_base == 0.1
    assert cfg.backoff_cap == 10.0
    assert cfg.shutdown_timeout == 30.0
    assert cfg.force_stop_grace == 3.0
    assert cfg.on_exhausted is ExhaustedAction.DEGRADE
    assert cfg.log_format is LogFormat.AUTO
    assert cfg.log_level == "info"
    assert cfg.access_log is False
    assert cfg.lifespan is Lifespan.AUTO
    assert cfg.backlog == 2048
    assert cfg.timeout_keep_alive == 5
    assert cfg.ssl_certfile is None
    assert cfg.ssl_keyfile is None


def test_field_helpers() -> None:
    assert FIELD_NAMES[0] == "host"
    assert "max_restarts" in FIELD_NAMES
    assert len(FIELD_NAMES) == len(set(FIELD_NAMES)) == 60
    assert field_default("workers") == 1
    assert field_default("mode") is None
    assert field_type("workers") == "int"
    assert field_type("mode") == "WorkerMode | None"
    assert field_help("port") == "TCP port for the app; 0 picks a free one."


def test_every_field_has_a_parser_and_help() -> None:
    for name in FIELD_NAMES:
        assert field_help(name)
        # Parsing the default's own text form must round-trip (None fields skip).
        default = field_default(name)
        if default is None:
            continue
        if isinstance(default, tuple):
            raw: object = default
        else:
            raw = default.value if hasattr(default, "value") else str(default)
        assert parse_field(name, raw, "test") == default


def test_repeatable_reload_settings_from_every_source(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text(
        'reload = true\nreload-include = ["*.html", "*.txt"]\n', encoding="utf-8"
    )
    loaded = load_config(
        {"reload_dir": ("src", "lib"), "reload_exclude": ()},
        environ={"CORRAL_RELOAD_EXCLUDE": "tests, build"},
        cwd=tmp_path,
    )
    config = loaded.config
    assert config.reload is True
    assert config.reload_dir == ("src", "lib")
    assert config.reload_include == ("*.html", "*.txt")
    assert config.reload_exclude == ("tests", "build"), "an unused flag () lets the env through"
    assert ServerConfig().reload_dir == (".",)
    assert field_repeats("reload_dir")
    assert not field_repeats("workers")


def test_server_config_is_frozen() -> None:
    cfg = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 4  # type: ignore[misc]
    assert cfg.workers == 1


def test_valid_custom_config() -> None:
    cfg = ServerConfig(
        port=0,
        workers=8,
        max_restarts=0,
        restart_window=0.5,
        backoff_base=0.0,
        backoff_cap=0.0,
        shutdown_timeout=0.0,
        force_stop_grace=0.0,
        log_level="debug",
        timeout_keep_alive=0,
        ssl_certfile="c.pem",
        ssl_keyfile="k.pem",
    )
    assert cfg.workers == 8
    assert cfg.port == 0


# --- Validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"workers": 0}, ["workers must be at least 1", "got 0", "--workers 1"]),
        ({"workers": -3}, ["workers must be at least 1", "got -3"]),
        ({"port": -1}, ["port must be 0-65535", "got -1", "use 0"]),
        ({"port": 65536}, ["port must be 0-65535", "got 65536"]),
        ({"max_restarts": -1}, ["max_restarts must be 0 or more", "got -1"]),
        (
            {"shutdown_timeout": -1.0},
            ["shutdown_timeout must not be negative", "--shutdown-timeout 0 or more"],
        ),
        (
            {"force_stop_grace": -0.5},
            ["force_stop_grace must not be negative", "--force-stop-grace 0 or more"],
        ),
        (
            {"restart_window": -1.0},
            ["restart_window must not be negative", "--restart-window 0 or more"],
        ),
        (
            {"backoff_base": -0.1, "backoff_cap": 1.0},
            ["backoff_base must not be negative", "--backoff-base"],
        ),
        ({"restart_window": 0.0}, ["restart_window must be positive", "--restart-window 60"]),
        (
            {"backoff_base": 5.0, "backoff_cap": 1.0},
            ["backoff_cap must be at least backoff_base", "--backoff-cap"],
        ),
        ({"log_level": "verbose"}, ["log_level 'verbose' is unknown", "debug"]),
        ({"backlog": 0}, ["backlog must be positive"]),
        ({"timeout_keep_alive": -1}, ["timeout_keep_alive not negative"]),
        ({"ssl_certfile": "cert.pem"}, ["--ssl-certfile", "--ssl-keyfile"]),
        ({"ssl_keyfile": "key.pem"}, ["--ssl-certfile", "--ssl-keyfile"]),
        (
            {"worker_timeout": -1.0},
            ["worker_timeout must not be negative", "--worker-timeout 0 or more"],
        ),
        ({"max_requests": -1}, ["max_requests and max_requests_jitter must be 0 (off) or more"]),
        ({"max_requests_jitter": 10}, ["--max-requests-jitter needs --max-requests"]),
    ],
)
def test_validation_errors_name_the_fix(kwargs: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert info.value.exit_code is ExitCode.CONFIG


def test_port_bounds_are_inclusive() -> None:
    assert ServerConfig(port=0).port == 0
    assert ServerConfig(port=65535).port == 65535


# --- parse_field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (True, True),
        (False, False),
    ],
)
def test_bool_parsing(raw: object, expected: bool) -> None:
    assert parse_field("access_log", raw, "test") is expected


def test_bool_parsing_rejects_other_text() -> None:
    with pytest.raises(ConfigError, match=r"src: invalid value 'maybe' for access_log"):
        parse_field("access_log", "maybe", "src")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("auto", None), ("AUTO", None), (None, None), ("thread", WorkerMode.THREAD)],
)
def test_mode_parsing(raw: object, expected: WorkerMode | None) -> None:
    assert parse_field("mode", raw, "test") is expected


def test_mode_parsing_passes_enum_through_and_rejects_unknown() -> None:
    assert parse_field("mode", WorkerMode.PROCESS, "x") is WorkerMode.PROCESS
    with pytest.raises(ConfigError, match="invalid value 'fiber' for mode"):
        parse_field("mode", "fiber", "x")


def test_int_and_float_parsing() -> None:
    assert parse_field("workers", " 4 ", "x") == 4
    assert parse_field("workers", 4.0, "x") == 4
    assert parse_field("restart_window", "2.5", "x") == 2.5
    assert parse_field("restart_window", 3, "x") == 3.0
    for bad_int in (True, 2.5, "two", "2.5"):
        with pytest.raises(ConfigError, match="for workers"):
            parse_field("workers", bad_int, "x")
    for bad_float in (False, "soon"):
        with pytest.raises(ConfigError, match="for restart_window"):
            parse_field("restart_window", bad_float, "x")


def test_enum_and_optional_str_parsing() -> None:
    assert parse_field("on_exhausted", " EXIT ", "x") is ExhaustedAction.EXIT
    assert parse_field("log_format", "console", "x") is LogFormat.CONSOLE
    assert parse_field("lifespan", Lifespan.OFF, "x") is Lifespan.OFF
    assert parse_field("uds", "", "x") is None
    assert parse_field("uds", "/run/a.sock", "x") == "/run/a.sock"
    with pytest.raises(ConfigError, match="for on_exhausted"):
        parse_field("on_exhausted", "panic", "x")


# --- Config files ----------------------------------------------------------------------


def test_corral_toml_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text('workers = 3\nmode = "process"\naccess-log = true\nhost = "0.0.0.0"\n')
    assert read_config_file(path) == {
        "workers": 3,
        "mode": WorkerMode.PROCESS,
        "access_log": True,
        "host": "0.0.0.0",
    }


def test_corral_toml_may_also_use_tool_corral_table(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[tool.corral]\nworkers = 6\n")
    assert read_config_file(path) == {"workers": 6}


def test_pyproject_tool_corral_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "demo"\n\n[tool.other]\nx = 1\n\n'
        '[tool.corral]\nworkers = 2\nmax-restarts = 9\non_exhausted = "exit"\n'
    )
    assert read_config_file(path) == {
        "workers": 2,
        "max_restarts": 9,
        "on_exhausted": ExhaustedAction.EXIT,
    }


def test_pyproject_without_corral_table_gives_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "demo"\n')
    assert read_config_file(path) == {}


def test_dashed_keys_accepted(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text('max-restarts = 2\nrestart-window = 5\nlog-level = "debug"\n')
    cfg = _load(config_path=path, cwd=tmp_path).config
    assert cfg.max_restarts == 2
    assert cfg.restart_window == 5.0
    assert cfg.log_level == "debug"


def test_unknown_file_key_lists_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("workers = 2\nfrobnicate = 3\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    message = str(info.value)
    assert "unknown config key 'frobnicate'" in message
    assert str(path) in message
    assert "valid keys are: " + ", ".join(FIELD_NAMES) in message


@pytest.mark.parametrize(
    ("line", "suggestion"),
    [
        ("wrokers = 3", "did you mean 'workers'?"),
        ("max-restart = 3", "did you mean 'max-restarts'?"),
        ("shutdown_timout = 3", "did you mean 'shutdown_timeout'?"),
        ('forwarded-allowed-ips = "*"', "did you mean 'forwarded-allow-ips'?"),
    ],
)
def test_unknown_file_key_suggests_the_nearest_in_the_same_spelling(
    tmp_path: Path, line: str, suggestion: str
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=re.escape(suggestion)):
        read_config_file(path)


def test_bad_toml_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("workers = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        _load(config_path=path, cwd=tmp_path)


def test_missing_config_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        _load(config_path=path, cwd=tmp_path)
    assert str(info.value) == f"config file {path} does not exist; fix the --config path"


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text('workers = "many"\n')
    with pytest.raises(
        ConfigError, match=r"corral\.toml: workers must be an integer, not a string"
    ):
        read_config_file(path)


def test_find_config_file_prefers_corral_toml(tmp_path: Path) -> None:
    assert find_config_file(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("[tool.corral]\nworkers = 2\n")
    assert find_config_file(tmp_path) == tmp_path / "pyproject.toml"
    (tmp_path / "corral.toml").write_text("workers = 3\n")
    assert find_config_file(tmp_path) == tmp_path / "corral.toml"


def test_find_config_file_skips_pyproject_without_corral(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config_file(tmp_path) is None


# --- Environment -----------------------------------------------------------------------


def test_read_environment_known_and_unknown() -> None:
    values, unknown = read_environment(
        {
            "CORRAL_WORKERS": "4",
            "CORRAL_ACCESS_LOG": "true",
            "CORRAL_MODE": "auto",
            "CORRAL_FROBNICATE": "1",
            "CORRAL_": "x",
            "PATH": "/usr/bin",
            "WORKERS": "9",
        }
    )
    assert values == {"workers": 4, "access_log": True, "mode": None}
    assert sorted(unknown) == ["CORRAL_", "CORRAL_FROBNICATE"]


def test_unknown_env_returned_not_raised(tmp_path: Path) -> None:
    loaded = _load(environ={"CORRAL_NOPE": "1", "CORRAL_WORKERS": "2"}, cwd=tmp_path)
    assert loaded.unknown_env == ("CORRAL_NOPE",)
    assert loaded.config.workers == 2


def test_invalid_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(environ={"CORRAL_WORKERS": "lots"}, cwd=tmp_path)
    assert str(info.value).startswith("environment variable CORRAL_WORKERS: invalid value 'lots'")


def test_env_bools_from_strings(tmp_path: Path) -> None:
    assert _load(environ={"CORRAL_ACCESS_LOG": "true"}, cwd=tmp_path).config.access_log is True
    assert _load(environ={"CORRAL_ACCESS_LOG": "0"}, cwd=tmp_path).config.access_log is False


def test_env_mode_auto_is_none_and_thread_is_thread(tmp_path: Path) -> None:
    assert _load(environ={"CORRAL_MODE": "auto"}, cwd=tmp_path).config.mode is None
    cfg = _load(environ={"CORRAL_MODE": "thread"}, cwd=tmp_path).config
    assert cfg.mode is WorkerMode.THREAD


def test_env_value_failing_validation_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        _load(environ={"CORRAL_WORKERS": "0"}, cwd=tmp_path)


# --- Precedence -----------------------------------------------------------------------


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text(
        "workers = 2\nmax_restarts = 7\nbacklog = 100\nrestart_window = 30\n"
    )
    environ = {"CORRAL_WORKERS": "3", "CORRAL_MAX_RESTARTS": "8"}
    cli: dict[str, object] = {"workers": 4, "port": None, "backoff_cap": None}
    loaded = _load(cli, environ=environ, cwd=tmp_path)
    cfg = loaded.config
    assert cfg.workers == 4  # CLI beats env and file
    assert cfg.max_restarts == 8  # env beats file
    assert cfg.backlog == 100  # file beats default
    assert cfg.restart_window == 30.0
    assert cfg.port == 8000  # a None CLI value means "not given": default stays
    assert cfg.backoff_cap == 10.0
    assert loaded.file == tmp_path / "corral.toml"
    assert loaded.unknown_env == ()


def test_explicit_config_path_beats_discovery(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("workers = 2\n")
    other = tmp_path / "other.toml"
    other.write_text("workers = 5\n")
    loaded = _load(config_path=other, cwd=tmp_path)
    assert loaded.config.workers == 5
    assert loaded.file == other


def test_pyproject_discovered_via_cwd(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.corral]\nmax-restarts = 1\n")
    loaded = _load(cwd=tmp_path)
    assert loaded.file == tmp_path / "pyproject.toml"
    assert loaded.config.max_restarts == 1


def test_no_file_no_env_no_cli_gives_defaults(tmp_path: Path) -> None:
    loaded = _load(cwd=tmp_path)
    assert loaded == LoadedConfig(ServerConfig(), None, ())


def test_cli_strings_are_parsed_and_errors_name_the_flag(tmp_path: Path) -> None:
    cfg = _load({"max_restarts": "3", "mode": "process"}, cwd=tmp_path).config
    assert cfg.max_restarts == 3
    assert cfg.mode is WorkerMode.PROCESS
    with pytest.raises(ConfigError, match=r"^--max-restarts: invalid value 'x' for max_restarts"):
        _load({"max_restarts": "x"}, cwd=tmp_path)


def test_merged_values_are_validated_together(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("backoff_cap = 1.0\n")
    with pytest.raises(ConfigError, match="backoff_cap must be at least backoff_base"):
        _load(environ={"CORRAL_BACKOFF_BASE": "2"}, cwd=tmp_path)


# --- Strict files: types, spellings, where the table lives ----------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('workers = "3"', "workers must be an integer, not a string ('3'); write workers = 3"),
        ('access-log = "true"', "access_log must be true or false, not a string"),
        ("shutdown_timeout = true", "shutdown_timeout must be a number, not a boolean"),
        ("host = 1", "host must be a string, not an integer"),
        ("forwarded-allow-ips = [1, 2]", "forwarded_allow_ips must be a string or a list"),
        ('headers = "X-A: 1"', "headers must be a list of 'Name: value' strings or a table"),
    ],
)
def test_file_values_of_the_wrong_toml_type_are_rejected(
    tmp_path: Path, line: str, fragment: str
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert fragment in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


def test_env_values_are_text_and_parsed(tmp_path: Path) -> None:
    cfg = _load(environ={"CORRAL_WORKERS": "3", "CORRAL_PROXY_HEADERS": "off"}, cwd=tmp_path).config
    assert (cfg.workers, cfg.proxy_headers) == (3, False)


def test_pyproject_tool_table_with_inline_corral(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool]\ncorral = { workers = 4, root-path = "/api" }\n'
    )
    assert find_config_file(tmp_path) == tmp_path / "pyproject.toml"
    cfg = _load(cwd=tmp_path).config
    assert (cfg.workers, cfg.root_path) == (4, "/api")


def test_pyproject_mentioning_corral_in_text_only_is_not_a_config(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndescription = "not [tool.corral] at all"\n'
    )
    assert find_config_file(tmp_path) is None


def test_corral_toml_with_top_level_keys_and_a_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("workers = 2\n\n[tool.corral]\nmax-restarts = 3\n")
    with pytest.raises(ConfigError, match=r"both top-level keys \(workers\) and a \[tool.corral\]"):
        read_config_file(path)


def test_corral_toml_with_another_tools_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[tool.black]\nline-length = 3\n")
    with pytest.raises(ConfigError, match=r"unknown table \[tool.black\]"):
        read_config_file(path)


def test_one_key_in_both_spellings_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("max-restarts = 2\nmax_restarts = 3\n")
    with pytest.raises(ConfigError, match="max_restarts is set twice"):
        read_config_file(path)


# --- corral's own and foreign environment variables -----------------------------------


def test_status_url_is_corrals_own_variable_not_unknown(tmp_path: Path) -> None:
    loaded = _load(environ={"CORRAL_STATUS_URL": "http://x", "CORRAL_WORKRES": "2"}, cwd=tmp_path)
    assert loaded.unknown_env == ("CORRAL_WORKRES",)
    assert describe_unknown_variable("CORRAL_WORKRES") == (
        "CORRAL_WORKRES (did you mean CORRAL_WORKERS?)"
    )
    assert describe_unknown_variable("CORRAL_ZZZZZZZZZZ") == "CORRAL_ZZZZZZZZZZ"


def test_web_concurrency_ranks_below_file_env_and_flag(tmp_path: Path) -> None:
    environ = {"WEB_CONCURRENCY": "3"}
    assert _load(environ=environ, cwd=tmp_path).config.workers == 3
    file = tmp_path / "corral.toml"
    file.write_text("workers = 4\n")
    assert _load(environ=environ, config_path=file, cwd=tmp_path).config.workers == 4
    both = {**environ, "CORRAL_WORKERS": "5"}
    assert _load(environ=both, config_path=file, cwd=tmp_path).config.workers == 5
    assert _load({"workers": "6"}, environ=both, cwd=tmp_path).config.workers == 6


def test_web_concurrency_garbage_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable WEB_CONCURRENCY"):
        _load(environ={"WEB_CONCURRENCY": "lots"}, cwd=tmp_path)


def test_forwarded_allow_ips_default_and_sources(tmp_path: Path) -> None:
    assert _load(cwd=tmp_path).config.forwarded_allow_ips == ("127.0.0.1", "::1")
    foreign = {"FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2"}
    assert _load(environ=foreign, cwd=tmp_path).config.forwarded_allow_ips == (
        "10.0.0.1",
        "10.0.0.2",
    )
    own = {**foreign, "CORRAL_FORWARDED_ALLOW_IPS": "*"}
    assert _load(environ=own, cwd=tmp_path).config.forwarded_allow_ips == ("*",)
    flag = _load({"forwarded_allow_ips": "192.0.2.0/24"}, environ=own, cwd=tmp_path)
    assert flag.config.forwarded_allow_ips == ("192.0.2.0/24",)


# --- Multi-valued settings ------------------------------------------------------------


def test_headers_from_every_source(tmp_path: Path) -> None:
    pairs = (("X-A", "1"), ("X-B", "two words"))
    assert parse_field("headers", ("X-A: 1", "X-B:two words"), "--header") == pairs
    assert parse_field("headers", "X-A: 1\nX-B: two words", "env") == pairs
    assert parse_field("headers", {"X-A": "1", "X-B": "two words"}, "file") == pairs
    path = tmp_path / "corral.toml"
    path.write_text('headers = ["X-A: 1", "X-B: two words"]\n')
    assert read_config_file(path) == {"headers": pairs}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (("no colon here",), "is not 'Name: value'"),
        ((": empty name",), "is not 'Name: value'"),
    ],
)
def test_malformed_header_lines(raw: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_field("headers", raw, "--header")


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ((("Bad Name", "x"),), "'Bad Name' is not a valid HTTP field name"),
        ((("X-A", "a\rb"),), "has a value HTTP cannot carry"),
        ((("X-A", "snow ☃"),), "has a value HTTP cannot carry"),
    ],
)
def test_invalid_headers_are_rejected(headers: tuple[tuple[str, str], ...], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ServerConfig(headers=headers)


def test_cert_reqs_accepts_uvicorn_numbers_and_names() -> None:
    assert parse_field("ssl_cert_reqs", "2", "x") is CertRequirement.REQUIRED
    assert parse_field("ssl_cert_reqs", "optional", "x") is CertRequirement.OPTIONAL
    assert CertRequirement.REQUIRED.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ssl_ca_certs": "ca.pem"}, "--ssl-ca-certs needs TLS"),
        ({"ssl_keyfile_password": "pw"}, "--ssl-keyfile-password needs TLS"),
        (
            {"ssl_certfile": "c", "ssl_keyfile": "k", "ssl_cert_reqs": CertRequirement.REQUIRED},
            "set that too",
        ),
        ({"limit_concurrency": 0}, "limit_concurrency must be at least 1"),
        ({"fd": -1}, "fd must be a file descriptor number"),
        ({"fd": 3, "uds": "/tmp/x"}, "--fd and --uds"),
        ({"root_path": "api"}, "must start with '/'"),
        ({"root_path": "/api/"}, "must start with '/'"),
        ({"forwarded_allow_ips": ()}, "--no-proxy-headers"),
        ({"forwarded_allow_ips": ("10.0.0.300",)}, "'10.0.0.300' is not an IP address"),
        ({"forwarded_allow_ips": ("10.0.0.1/8",)}, "host bits zero"),
        ({"forwarded_allow_ips": ("*", "10.0.0.1")}, "pass it alone"),
    ],
)
def test_new_serving_settings_are_validated(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        ServerConfig(**kwargs)


def test_key_password_is_kept_out_of_repr() -> None:
    cfg = ServerConfig(ssl_certfile="c", ssl_keyfile="k", ssl_keyfile_password="hunter2")
    assert "hunter2" not in repr(cfg)


# --- The env file ---------------------------------------------------------------------


def test_env_file_feeds_corral_variables_and_does_not_override(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        '# comment\nCORRAL_WORKERS=3\nexport APP_GREETING="hello there"\nKEEP=from-file\n'
    )
    loaded = _load({"env_file": ".env"}, environ={"KEEP": "from-env"}, cwd=tmp_path)
    assert loaded.config.workers == 3
    assert dict(loaded.env_from_file) == {"CORRAL_WORKERS": "3", "APP_GREETING": "hello there"}


def test_env_file_named_in_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "vars.env").write_text("CORRAL_MAX_RESTARTS=8\n")
    (tmp_path / "corral.toml").write_text('env-file = "vars.env"\n')
    assert _load(cwd=tmp_path).config.max_restarts == 8


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env file .*nope.env does not exist; fix --env-file"):
        _load({"env_file": "nope.env"}, cwd=tmp_path)


def test_old_import_paths_still_work() -> None:
    from corral import config  # noqa: PLC0415

    assert config.load_config is load_config
    assert config.parse_field is parse_field
    with pytest.raises(AttributeError):
        _ = config.no_such_name
