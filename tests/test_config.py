"""The configuration: every problem at once with its key path, and the documented defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import (
    _ENV_KEYS,
    _RETENTION_KEYS,
    _RETRY_KEYS,
    ConfigError,
    Environment,
    PoolSettings,
    RetryPolicy,
    check_config,
    check_config_text,
    load_config,
    parse_duration,
)
from tests.conftest import ROOT

EXAMPLE = ROOT / "migrabot.example.toml"
EXAMPLE_ENV = {
    "STAGING_DATABASE_URL": "postgresql://app:StagePw77@stage-db:5432/twinship_staging",
    "DATABASE_URL": "postgresql://app:ProdPw9988@prod-db:6432/twinship_prod?pgbouncer=true",
    "DIRECT_DATABASE_URL": "postgresql://app:ProdPw9988@prod-db:5432/twinship_prod",
    "PGBOUNCER_ADMIN_URL": "postgresql://pgbouncer:BouncePw55@prod-db:6432/pgbouncer",
}


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    config, problems, _ = check_config_text(text, environ=environ or {})
    assert (config is None) == bool(problems)
    return [str(p) for p in problems]


def test_example_file_is_valid_and_says_what_the_issue_asks():
    config, problems, warnings = check_config(EXAMPLE, environ=EXAMPLE_ENV)
    assert problems == [] and warnings == []
    prod = config.environment("production")
    assert prod is config.environment("prod") and prod.is_production
    assert prod.requires == ("staging",)
    assert prod.required_approvals == 2
    assert prod.allow_self_approval is False and prod.confirm_by_typing is True
    # migrations and backups bypass pgBouncer
    assert prod.migration_url == EXAMPLE_ENV["DIRECT_DATABASE_URL"]
    assert prod.pgbouncer_admin_url and prod.health_url
    assert prod.retry.max_total == 300.0 and prod.retry.base_delay == 0.5
    assert prod.retention.keep_last == 10 and prod.retention.keep_days == 30.0
    assert config.environment("staging").retention.keep_last == 5
    # relative paths are relative to the file's folder
    assert prod.migrations_dir == ROOT / "prisma" / "migrations"


def test_every_key_is_in_the_example_and_documented_in_the_readme():
    example = EXAMPLE.read_text()
    readme = (ROOT / "README.md").read_text()
    keys = [*_ENV_KEYS, *_RETRY_KEYS, *_RETENTION_KEYS, "approve_reactions", "reject_reactions",
            "timezone", "exclude", "path"]
    missing_example = [k for k in keys if not re.search(rf"^{k}\s*=", example, re.M)]
    missing_readme = [k for k in keys if f"`{k}`" not in readme]
    assert not missing_example, f"keys absent from migrabot.example.toml: {missing_example}"
    assert not missing_readme, f"keys not documented in README.md: {missing_readme}"


def test_all_problems_are_reported_at_once_with_their_key_path():
    text = '''
    colour = "blue"
    [environments.staging]
    database_url = "env:STAGING_URL"
    lock_timeout = "soon"
    [environments.staging.retry]
    max_attempts = 0
    jitter = true
    [environments.staging.retention]
    keep_last = "many"
    [environments.prod]
    aliases = ["production"]
    database_url = "mysql://app@db/prod"
    required_approvals = "two"
    requires = ["stagin"]
    health_url = "ftp://x"
    [environments.qa]
    aliases = ["Production"]
    databse_url = "postgresql://app@db/qa"
    '''
    problems = problems_of(text)
    expected = [
        'colour: unknown key',
        "environments.staging.database_url: environment variable STAGING_URL is not set",
        'environments.staging.lock_timeout: expected a duration like "1s" or "5min", got "soon"',
        "environments.staging.retry.max_attempts: expected an integer of at least 1, got 0",
        "environments.staging.retry.jitter: unknown key",
        'environments.staging.retention.keep_last: expected an integer, got "many"',
        'environments.prod.database_url: expected a postgresql:// URL, got scheme "mysql"',
        'environments.prod.required_approvals: expected an integer, got "two"',
        "environments.prod.health_url: expected an http:// or https:// URL",
        'environments.prod.requires[0]: "stagin" names no environment',
        'environments.qa.databse_url: unknown key (did you mean "database_url"?',
        "environments.qa.database_url: missing (required)",
        'environments.qa.aliases[0]: the name "Production" is already used by environment "prod"',
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), f"{start!r} not in {problems}"
    assert len(problems) == len(expected), problems


def test_requires_naming_a_broken_environment_is_not_reported_as_unknown():
    problems = problems_of('''
    [environments.staging]
    database_url = "env:UNSET_VAR"
    [environments.prod]
    database_url = "postgresql://app@db/prod"
    requires = ["staging"]
    ''')
    assert problems == ["environments.staging.database_url: environment variable UNSET_VAR is not set"]


@pytest.mark.parametrize(("url", "problem"), [
    ("postgresql://app@db:notaport/prod", "malformed URL"),
    ("postgresql://app@/prod", "the URL has no host"),
    ("postgresql://app@db:5432", "names no database"),
    ("db:5432/prod", "expected a postgresql:// URL"),
])
def test_malformed_urls_are_named_without_their_password(url, problem):
    url = url.replace("app@", "app:Hidden123@")
    [message] = problems_of(f'[environments.x]\ndatabase_url = "{url}"\n')
    assert message.startswith("environments.x.database_url: ") and problem in message
    assert "Hidden123" not in message


def test_alias_given_twice_and_self_requirement():
    problems = problems_of('''
    [environments.prod]
    aliases = ["production", "production"]
    database_url = "postgresql://app@db/prod"
    requires = ["production"]
    ''')
    assert 'environments.prod.aliases[1]: the alias "production" is given twice' in problems
    assert "environments.prod.requires[0]: an environment cannot require itself" in problems


def test_secrets_in_the_file_are_refused_with_where_they_belong():
    [message] = problems_of('''
    [slack]
    bot_token = "xoxb-1-2-3"
    [environments.x]
    database_url = "postgresql://app@db/x"
    ''')
    assert message.startswith("slack.bot_token: secrets never live in the file")
    assert "SLACK_BOT_TOKEN" in message and "xoxb-1-2-3" not in message


def test_top_level_retry_table_says_it_belongs_to_an_environment():
    [message] = problems_of('[retention]\nkeep_last = 3\n[environments.x]\ndatabase_url = "postgresql://a@b/c"\n')
    assert message == "retention: unknown key here; retention goes under an environment: " \
                      "[environments.NAME.retention]"


def test_literal_password_is_accepted_with_a_warning():
    config, problems, warnings = check_config_text(
        '[environments.dev]\ndatabase_url = "postgresql://app:Literal99@db/dev"\n', environ={})
    assert problems == [] and config is not None
    [warning] = warnings
    assert warning.path == "environments.dev.database_url" and "Literal99" not in str(warning)
    # the same URL through env: is not warned about
    _, _, warnings = check_config_text('[environments.dev]\ndatabase_url = "env:DEV_URL"\n',
                                       environ={"DEV_URL": "postgresql://app:Literal99@db/dev"})
    assert warnings == []


def test_production_defaults_are_stricter_whatever_the_case_of_the_name():
    config, problems, _ = check_config_text('''
    [environments.live]
    aliases = ["Production"]
    database_url = "postgresql://app@db/live"
    [environments.staging]
    database_url = "postgresql://app@db/staging"
    ''', environ={})
    assert problems == []
    live, staging = config.environment("live"), config.environment("staging")
    assert live.is_production and (live.allow_self_approval, live.confirm_by_typing) == (False, True)
    assert not staging.is_production and (staging.allow_self_approval, staging.confirm_by_typing) == (True, False)
    assert staging.retry == RetryPolicy() and staging.lock_timeout == 1.0


def test_explicit_setting_beats_the_production_default():
    config, _, _ = check_config_text(
        '[environments.prod]\ndatabase_url = "postgresql://a@b/c"\nallow_self_approval = true\n', environ={})
    assert config.environment("prod").allow_self_approval is True


def test_pool_settings_come_from_keys_then_runbook_variables_then_defaults():
    text = '[environments.a]\ndatabase_url = "postgresql://a@b/c"\nDB_POOL_MAX = 7\n'
    config, problems, _ = check_config_text(text, environ={"DB_POOL_MIN": "3", "DB_POOL_MAX": "50"})
    assert problems == []
    assert config.environment("a").pool == PoolSettings(min=3, max=7, idle_timeout_ms=30000,
                                                        acquire_timeout_ms=60000)
    _, problems, _ = check_config_text(text, environ={"DB_POOL_MIN": "lots"})
    assert [str(p) for p in problems] == ['environments.a.DB_POOL_MIN (from $DB_POOL_MIN): expected an integer, '
                                          'got "lots"']
    _, problems, _ = check_config_text(text, environ={"DB_POOL_MIN": "9"})
    assert [str(p) for p in problems] == ["environments.a: DB_POOL_MIN (9) is larger than DB_POOL_MAX (7)"]


def test_retry_base_delay_longer_than_max_delay_is_a_problem():
    problems = problems_of('[environments.a]\ndatabase_url = "postgresql://a@b/c"\n'
                           '[environments.a.retry]\nbase_delay = "1min"\nmax_delay = "5s"\n')
    assert len(problems) == 1 and problems[0].startswith("environments.a.retry.base_delay: ")


def test_no_file_uses_the_runbooks_database_url_and_node_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"DATABASE_URL": "postgresql://app:RunbookPw1@db:5432/twinship_prod", "NODE_ENV": "production",
               "DB_POOL_MAX": "20"}
    config = load_config(None, environ)
    [env] = config.environments.values()
    assert env.name == "production" and env.is_production and env.pool.max == 20
    assert env.database_url == environ["DATABASE_URL"]
    assert "RunbookPw1" not in str(config.to_dict())


def test_config_path_comes_from_migrabot_config(tmp_path):
    file = tmp_path / "elsewhere.toml"
    file.write_text('[environments.x]\ndatabase_url = "postgresql://a@b/c"\n')
    config, problems, _ = check_config(None, {"MIGRABOT_CONFIG": str(file)})
    assert problems == [] and config.source == str(file)
    _, problems, _ = check_config(None, {"MIGRABOT_CONFIG": str(tmp_path / "gone.toml")})
    assert "does not exist" in str(problems[0])


def test_nothing_at_all_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(None, {})
    assert "copy migrabot.example.toml to migrabot.toml" in str(err.value)


def test_to_dict_redacts_every_url():
    config, _, _ = check_config(EXAMPLE, environ=EXAMPLE_ENV)
    text = str(config.to_dict())
    for secret in ("StagePw77", "ProdPw9988", "BouncePw55"):
        assert secret not in text


@pytest.mark.parametrize(("value", "seconds"), [("250ms", 0.25), ("1s", 1.0), ("5min", 300.0), ("2h", 7200.0),
                                                ("1d", 86400.0), (3, 3.0), (1.5, 1.5)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", True, -2, "1 fortnight"])
def test_parse_duration_refuses_nonsense(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_environment_lookup_is_case_insensitive():
    env = Environment(name="prod", database_url="postgresql://a@b/c", migrations_dir=Path("m"),
                      backup_dir=Path("b"), aliases=("production",))
    config, _, _ = check_config_text('[environments.prod]\naliases=["production"]\ndatabase_url="postgresql://a@b/c"\n',
                                     environ={})
    assert config.environment(" PRODUCTION ").name == "prod" and config.environment("nope") is None
    assert env.migration_url == "postgresql://a@b/c"
