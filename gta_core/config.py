"""Settings: one declarative `Setting` per option drives the CLI flags, the environment and the docs.

Precedence is CLI flag > environment variable > default. Every value is validated when the
settings are built, so a bad value fails at start with one line naming the setting and the
rule it broke, instead of surfacing minutes later inside a worker.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_DURATION = 100 * 365.25 * 86400


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``30``, ``1.5``, ``250ms``, ``30s``, ``5m``, ``2h`` or ``7d``.

    At most 100 years either way: NaN slips past every ``<= 0`` check, and infinity (which
    is also what 400 nines become) or a few thousand years cannot be turned into an SQL
    interval or a timestamp. The comparison comes first: an int too large for a float is fine there.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds: float = text
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 5m, 7d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not -MAX_DURATION <= seconds <= MAX_DURATION:  # False for NaN too
        raise ValueError(f"{text!r} is not a duration of at most 100 years")
    return float(seconds)


def format_duration(seconds: float | None) -> str:
    """A duration for people, the inverse of `parse_duration`: ``35ms``, ``4.2s``, ``3.5m``,
    ``1.2h``, ``2.0d``; ``-`` for None. A negative age (another host's clock ahead of this one)
    reads ``0ms``: the `gta` commands and the dashboard print ages with this one function."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"


def _integer(text: str | float) -> int:
    """``int()`` that refuses to truncate: ``1.5`` workers is an error, not one worker."""
    if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
        raise ValueError("must be an integer")
    return int(text)


#: the largest integer GTA's BIGINT columns hold (and SQLite's driver binds)
BIGINT_MAX = 2**63 - 1


def positive_int(text: str | int) -> int:
    """A count, from 1 to `BIGINT_MAX` (``1.5`` is refused, not truncated): the settings' counts
    and the command line's (``gta list --limit``) alike."""
    value = _integer(text)
    if not 1 <= value <= BIGINT_MAX:
        raise ValueError(f"must be an integer from 1 to 2**63 - 1, not {value}")
    return value


def _non_negative_int(text: str | int) -> int:
    value = _integer(text)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _positive_duration(text: str | float) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("must be a duration > 0")
    return value


def _non_negative_duration(text: str | float) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError("must be a duration >= 0")
    return value


def _name_list(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("must be names (strings)")
    names = tuple(item.strip() for item in items if item.strip())
    return names


def _queue_list(text: str | Sequence[str]) -> tuple[str, ...]:
    names = _name_list(text)
    if not names:
        raise ValueError("must name at least one queue")
    return names


#: the dialect (`gta_core.db.drivers`) of each database URL scheme
DIALECTS = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def _database_url(text: str) -> str:
    scheme = str(text).split("://", 1)[0] if "://" in str(text) else ""
    if scheme not in DIALECTS:
        raise ValueError("must be sqlite:///PATH, postgresql://..., mysql://... or mariadb://...")
    return str(text)


def dialect_of_url(url: str) -> str:
    """``sqlite``, ``postgres`` or ``mysql`` for a database URL the settings accepted."""
    return DIALECTS[url.split("://", 1)[0]]


def _listen_url(text: str) -> str:
    """Empty (LISTEN on the database URL), ``off`` (no LISTEN: poll), or a PostgreSQL URL."""
    value = str(text).strip()
    if value in ("", "off") or "://" in value and DIALECTS.get(value.split("://", 1)[0]) == "postgres":
        return value
    raise ValueError("must be a postgresql://... URL of a direct connection (not through a transaction "
                     "pooler), or off")


def _table_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,50}", str(text)):
        raise ValueError("must be a plain SQL identifier of at most 51 characters")
    return str(text)


def _bind_address(text: str) -> str:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9464")
    return str(text)


_HOST_NAME = re.compile(r"\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def _host_names(text: str | Sequence[str]) -> tuple[str, ...]:
    """Host names (``.example.com``: its subdomains too), IP addresses, or ``*``."""
    names = _name_list(text)
    for name in names:
        if name != "*" and not _HOST_NAME.fullmatch(name) and not _is_address(name.strip("[]")):
            raise ValueError(f"{name!r} is not a host name, .domain, IP address or *")
    return names


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _dashboard_token(text: str) -> str:
    token = str(text).strip()
    if token and token != "generate" and len(token) < 16:
        raise ValueError("must be at least 16 characters (or 'generate', or empty for a read-only dashboard)")
    return token


def _switch(text: str | bool) -> bool:
    """On/off from ``1``/``0``, ``true``/``false``, ``yes``/``no`` or ``on``/``off``."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be on or off (1/0, true/false, yes/no)")


def redact_url(text: str) -> str:
    """A URL as it may be shown: its password (``user:PASSWORD@``, ``password=`` in the query)
    replaced by ``***``, even in a URL too malformed to parse."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:***@{location}"
    return scheme + separator + re.sub(r"(?i)(password=)[^&;\s]*", r"\1***", rest)


def _shown_url(raw: Any) -> str:
    return repr(redact_url(str(raw)))


def _hidden(raw: Any) -> str:
    return "<hidden>"


def _span_relation(text: str) -> str:
    value = str(text).strip().lower()
    if value not in {"link", "parent-first"}:
        raise ValueError("must be link or parent-first")
    return value


def _log_level(text: str) -> str:
    level = str(text).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


@dataclasses.dataclass(frozen=True)
class Setting:
    """One option: its name, CLI flag, environment variable, parser/validator, default and help.

    The default is written as a user would write it ("7d", not 604800.0): ``--help`` shows it
    so, and it goes through ``parse`` like any other value.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    #: how a refused value is echoed in an error: a secret never is, a URL without its password
    shown: Callable[[Any], str] = repr

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "GTA_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", _database_url, "sqlite:///gta.db", "task database URL", "URL", _shown_url),
    Setting("table", _table_name, "gta_tasks", "name of the task table", "NAME"),
    Setting("listen_url", _listen_url, "",
            "PostgreSQL: the supervisor's LISTEN connection, when the database URL goes through a pooler in "
            "transaction mode such as PgBouncer (default: the database URL; off: no LISTEN, idle "
            "workers poll every scan_interval)", "URL|off", _shown_url),
    Setting("workers", positive_int, 2, "worker processes", "N"),
    Setting("threads", positive_int, 1, "tasks run at once in each worker", "T"),
    Setting("concurrency", positive_int, 100,
            "async (async def) tasks run at once on each worker's event loop, beside its threads", "N"),
    Setting("batch", positive_int, 100, "most tasks leased by one statement", "N"),
    Setting("prefetch", _non_negative_int, 200,
            "most tasks a worker holds leased beyond its threads; it holds about 50 ms of work at the "
            "pace its tasks run, so slow tasks are not prefetched (0: never)", "N"),
    Setting("queues", _queue_list, ("default",), "comma-separated queues to serve", "A,B"),
    Setting("lease_timeout", _positive_duration, "30s",
            "a lease not renewed for this long is rescued (heartbeat every third of it)", "DURATION"),
    Setting("scan_interval", _positive_duration, "5s", "poll period of an idle worker", "DURATION"),
    Setting("instant_scan_interval", _positive_duration, "100ms",
            "first poll delay after work ran out; doubles up to scan_interval", "DURATION"),
    Setting("shutdown_timeout", _non_negative_duration, "30s",
            "how long a stopping worker waits for its running tasks", "DURATION"),
    Setting("storage_timeout", _positive_duration, "7d",
            "finished tasks older than this are deleted by cleanup", "DURATION"),
    Setting("initialized_timeout", _positive_duration, "5m",
            "a task pending longer than this is abnormal", "DURATION"),
    Setting("running_timeout", _positive_duration, "30m",
            "a task running longer than this is abnormal", "DURATION"),
    Setting("monitor_interval", _positive_duration, "60s",
            "period of the built-in monitor task (abnormal tasks report)", "DURATION"),
    Setting("cleanup_interval", _positive_duration, "5m",
            "period of the built-in cleanup task (deletes finished tasks past storage_timeout)", "DURATION"),
    Setting("cleanup_batch", positive_int, 1000, "most finished tasks cleanup deletes per transaction", "N"),
    Setting("result_max_bytes", positive_int, 65536,
            "largest task result stored, as JSON; a larger one fails its task", "BYTES"),
    Setting("args_max_bytes", positive_int, 1048576,
            "largest task arguments (and, apart, context) accepted at submit, as JSON; larger ones are "
            "refused and nothing is written", "BYTES"),
    Setting("args_max_depth", positive_int, 32,
            "deepest nesting of lists and dicts in task arguments (and context) accepted at submit", "N"),
    Setting("attempts_kept", positive_int, 50,
            "the attempt log keeps each task's first and last N entries; those between are dropped (and "
            "counted)", "N"),
    Setting("retry_base", _positive_duration, "1s",
            "first retry delay of the built-in retry policy; doubles per attempt", "DURATION"),
    Setting("retry_cap", _positive_duration, "1h", "longest retry delay of the built-in policy", "DURATION"),
    Setting("max_tasks_per_worker", _non_negative_int, 0,
            "recycle a worker after this many tasks (0: never)", "N"),
    Setting("metrics", _switch, "on", "run the metrics sidecar (--no-metrics turns it off)", "ON|OFF"),
    Setting("metrics_bind", _bind_address, "127.0.0.1:9464", "address of the metrics sidecar", "HOST:PORT"),
    Setting("allowed_hosts", _host_names, (),
            "more Host names the metrics sidecar (and its dashboard) answers to, besides localhost, its "
            "addresses and this machine's name: a reverse proxy's, a scraper's; .example.com allows its "
            "subdomains, * any name (no DNS-rebinding defence)", "NAMES"),
    Setting("metrics_max_queues", positive_int, 100,
            "most queues /metrics and the dashboard's overview name; the others are summed under "
            "the queue label __other__", "N"),
    Setting("dashboard", _switch, "on",
            "serve the web dashboard at / of the metrics sidecar (--no-dashboard turns it off)", "ON|OFF"),
    Setting("dashboard_token", _dashboard_token, "",
            "token that allows the dashboard's actions (retry, cancel, purge); empty: read-only; "
            "'generate': a random one printed at start", "TOKEN", _hidden),
    Setting("dashboard_session_idle", _positive_duration, "30m",
            "a dashboard sign-in unused for this long ends", "DURATION"),
    Setting("dashboard_session_max_age", _positive_duration, "12h",
            "a dashboard sign-in ends this long after it began, used or not", "DURATION"),
    Setting("otel_span_relation", _span_relation, "link",
            "OpenTelemetry (the otel plugin): how an attempt's process span relates to the span that submitted its "
            "task: link (every attempt links to it), or parent-first (the first attempt of a task submitted alone "
            "and due at once is its child; delayed, retried and fan-out runs link)", "link|parent-first"),
    Setting("plugins", _name_list, (), "extra plugin modules to load, comma-separated", "MODULES"),
    Setting("disable_plugins", _name_list, (), "plugins to disable by name, comma-separated", "NAMES"),
    Setting("log_level", _log_level, "INFO", "logging level", "LEVEL"),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    """The default of the `Settings` field ``name``: its `Setting`'s, parsed as any value is."""
    setting = SETTINGS_BY_NAME[name]
    return setting.parse(setting.default)


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Validated settings. Build with `load_settings`; every field has a `Setting`, whose
    default is the field's (written once, in `SETTINGS`)."""

    database_url: str = _default("database_url")
    table: str = _default("table")
    listen_url: str = _default("listen_url")
    workers: int = _default("workers")
    threads: int = _default("threads")
    concurrency: int = _default("concurrency")
    batch: int = _default("batch")
    prefetch: int = _default("prefetch")
    queues: tuple[str, ...] = _default("queues")
    lease_timeout: float = _default("lease_timeout")
    scan_interval: float = _default("scan_interval")
    instant_scan_interval: float = _default("instant_scan_interval")
    shutdown_timeout: float = _default("shutdown_timeout")
    storage_timeout: float = _default("storage_timeout")
    initialized_timeout: float = _default("initialized_timeout")
    running_timeout: float = _default("running_timeout")
    monitor_interval: float = _default("monitor_interval")
    cleanup_interval: float = _default("cleanup_interval")
    cleanup_batch: int = _default("cleanup_batch")
    result_max_bytes: int = _default("result_max_bytes")
    args_max_bytes: int = _default("args_max_bytes")
    args_max_depth: int = _default("args_max_depth")
    attempts_kept: int = _default("attempts_kept")
    retry_base: float = _default("retry_base")
    retry_cap: float = _default("retry_cap")
    max_tasks_per_worker: int = _default("max_tasks_per_worker")
    metrics: bool = _default("metrics")
    metrics_bind: str = _default("metrics_bind")
    allowed_hosts: tuple[str, ...] = _default("allowed_hosts")
    metrics_max_queues: int = _default("metrics_max_queues")
    dashboard: bool = _default("dashboard")
    dashboard_token: str = _default("dashboard_token")  # a secret: its Setting hides it in reprs and errors
    dashboard_session_idle: float = _default("dashboard_session_idle")
    dashboard_session_max_age: float = _default("dashboard_session_max_age")
    otel_span_relation: str = _default("otel_span_relation")
    plugins: tuple[str, ...] = _default("plugins")
    disable_plugins: tuple[str, ...] = _default("disable_plugins")
    log_level: str = _default("log_level")

    def __repr__(self) -> str:
        """Every setting as an error would echo it: the token hidden, URLs without their password."""
        fields = ", ".join(f"{setting.name}={setting.shown(getattr(self, setting.name))}" for setting in SETTINGS)
        return f"Settings({fields})"

    @property
    def heartbeat_interval(self) -> float:
        return self.lease_timeout / 3

    @property
    def rescue_interval(self) -> float:
        """How often each supervisor looks for expired leases."""
        return max(0.5, min(self.scan_interval, self.lease_timeout / 3))

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**dataclasses.asdict(self), **changes}, environ={})


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from explicit overrides (e.g. CLI flags), then ``GTA_*`` variables, then defaults.

    Raises `ConfigError` naming the first invalid setting.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(SETTINGS_BY_NAME)
    if unknown:
        name = min(unknown, key=str)
        raise ConfigError(name if isinstance(name, str) and name.isidentifier() else repr(name), "no such setting")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw, source = overrides[setting.name], setting.flag
        elif setting.env in environ:
            raw, source = environ[setting.env], setting.env
        else:
            raw, source = setting.default, "default"
        try:
            values[setting.name] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{setting.name} ({source}={setting.shown(raw)})", rule(exc)) from None
    settings = Settings(**values)
    if settings.instant_scan_interval > settings.scan_interval:
        raise ConfigError("instant_scan_interval", "must not exceed scan_interval")
    return settings


def rule(exc: Exception) -> str:
    """What a value's check said, in the words of the settings' errors."""
    text = str(exc)
    if text.startswith("invalid literal for int()"):
        return "must be an integer"
    return text


def add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str], default: Any = None) -> None:
    """Add the CLI flags of the named settings; values stay raw strings until `load_settings`.
    ``default=argparse.SUPPRESS`` leaves an absent flag out of the namespace (a subcommand's
    copy of a global flag must not undo the value given before the subcommand)."""
    for name in names:
        setting = SETTINGS_BY_NAME[name]
        parser.add_argument(
            setting.flag,
            dest=name,
            default=default,
            metavar=setting.metavar,
            help=f"{setting.help} (env {setting.env}; default {_show_default(setting.default)})",
        )
        if setting.parse is _switch:  # an off switch reads better than `--metrics off`
            parser.add_argument("--no-" + setting.flag[2:], dest=name, action="store_const", const="off",
                                default=default, help=f"same as {setting.flag} off")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    overrides = {name: getattr(args, name) for name in SETTINGS_BY_NAME if hasattr(args, name)}
    return load_settings(overrides, environ)


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value) if value != "" else "none"
