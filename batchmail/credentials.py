"""The SMTP password: from an environment variable, a command's first line, or a no-echo prompt;
or an OAuth2 access token from a command's first line.

The password or token itself never appears in an error message, and is never passed to a
child process on its command line.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys

from batchmail.campaign import SmtpConfig
from batchmail.errors import CampaignError, Problem

_COMMAND_TIMEOUT = 120  # seconds: a password manager may ask to be unlocked


def resolve_secret(config: SmtpConfig, campaign_file: str) -> str | None:
    """What AUTH needs for ``config.username``: the OAuth2 access token when the account has
    ``oauth2_token_command``, else the password; None when the campaign sets no username."""
    if config.username and config.oauth2_token_command:
        return resolve_token(config, campaign_file)
    return resolve_password(config, campaign_file)


def resolve_token(config: SmtpConfig, campaign_file: str) -> str:
    """The OAuth2 access token: the first line ``oauth2_token_command`` prints."""
    if not config.oauth2_token_command:
        raise ValueError("resolve_token needs an account with oauth2_token_command")
    where = f"{campaign_file}, {config.key_path}.oauth2_token_command"
    token = _secret_from_command(config.oauth2_token_command, where, "access token").strip()
    if not token:
        raise CampaignError([Problem(where, "the command printed no access token")])
    return token


def resolve_password(config: SmtpConfig, campaign_file: str) -> str | None:
    """The password for ``config.username``, or None when the campaign sets no username."""
    if not config.username:
        return None
    if config.password_env:
        value = os.environ.get(config.password_env)
        if not value:
            raise CampaignError(
                [
                    Problem(
                        f"{campaign_file}, {config.key_path}.password_env",
                        f"the environment variable {config.password_env} is not set or empty",
                    )
                ]
            )
        return value
    if config.password_command:
        where = f"{campaign_file}, {config.key_path}.password_command"
        return _secret_from_command(config.password_command, where, "password")
    return _password_from_prompt(config, campaign_file)


def _secret_from_command(command: str, where: str, what: str) -> str:
    """The first line the command prints on stdout. It runs without a shell, with no input,
    for at most two minutes; errors name ``where`` and never show what it printed there."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise CampaignError([Problem(where, f"cannot split the command: {exc}")]) from exc
    if not argv:
        raise CampaignError([Problem(where, "empty command")])
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CampaignError([Problem(where, f"command not found: {argv[0]}")]) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CampaignError([Problem(where, f"could not run {argv[0]}: {exc}")]) from None
    if done.returncode != 0:
        # stderr is the helper's own message; its stdout might hold the secret, so it is not shown.
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f": {detail[0][:200]}" if detail else ""
        raise CampaignError([Problem(where, f"{argv[0]} exited with {done.returncode}{reason}")])
    first_line = done.stdout.decode("utf-8", "replace").splitlines()[:1]
    if not first_line or not first_line[0]:
        raise CampaignError([Problem(where, f"{argv[0]} printed no {what}")])
    return first_line[0]


def _password_from_prompt(config: SmtpConfig, campaign_file: str) -> str:
    if not sys.stdin.isatty():
        raise CampaignError(
            [
                Problem(
                    f"{campaign_file}, {config.key_path}",
                    f"a password is needed for {config.username} but there is no terminal "
                    "to ask on; "
                    f"set {config.key_path}.password_env or {config.key_path}.password_command",
                )
            ]
        )
    try:
        value = getpass.getpass(f"SMTP password for {config.username}@{config.host}: ")
    except (EOFError, KeyboardInterrupt):
        value = ""
    if not value:
        raise CampaignError([Problem(f"{campaign_file}, {config.key_path}", "no password given")])
    return value
