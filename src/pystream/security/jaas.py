"""Kafka's ``sasl.jaas.config`` text: one JAAS login module and its options.

The format (Kafka's ``JaasConfig``, after ``javax.security.auth.login.Configuration``)::

    <LoginModuleClass> <ControlFlag> *(<OptionName>=<OptionValue>);

e.g. ``org.apache.kafka.common.security.scram.ScramLoginModule required
username="admin" password="admin-secret";``.  Values are double-quoted strings
(``\\"`` and ``\\\\`` escape a quote and a backslash) or bare words.  A broker reads
its own login for the inter-broker listener from it (:func:`inter_broker_login`), as
Kafka does: ``listener.name.<listener>.<mechanism>.sasl.jaas.config``, then
``listener.name.<listener>.sasl.jaas.config``, then ``sasl.jaas.config``.

Error messages name the key and the position, never the text: it holds a password.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from pystream.errors import InvalidConfigError
from pystream.security.client_security import CLIENT_SASL_MECHANISMS, SaslLogin

log = logging.getLogger(__name__)

__all__ = [
    "CONTROL_FLAGS",
    "check_jaas_configs",
    "JaasLoginModule",
    "LOGIN_MODULES",
    "inter_broker_login",
    "jaas_config_keys",
    "parse_jaas_config",
]

CONTROL_FLAGS = ("required", "requisite", "sufficient", "optional")
#: The login modules pystream understands, by class name: both give a username and a
#: password (Kafka's client callback reads those, whatever the mechanism).
LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": "PLAIN",
    "org.apache.kafka.common.security.scram.ScramLoginModule": "SCRAM",
}

# A token: a quoted string (with backslash escapes), '=', ';', or a bare word.
_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(=)|(;)|([^\s=;"]+))', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True)
class JaasLoginModule:
    """One ``<class> <flag> key="value" ...;`` entry."""

    login_module: str
    control_flag: str
    options: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # options hold passwords: never show them
        return f"JaasLoginModule({self.login_module!r}, {self.control_flag!r}, options=<hidden>)"


def _tokens(text: str, key: str) -> list[tuple[str, str]]:
    """(kind, value) pairs: kind is "word", "string", "=" or ";"."""
    out: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidConfigError(
                f"{key}: unterminated quoted value at character {position + 1}; quote option "
                'values as key="value" (escape " and \\ with a backslash)'
            )
        quoted, equals, semicolon, word = match.groups()
        if quoted is not None:
            out.append(("string", _ESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[1]), quoted)))
        elif equals:
            out.append(("=", "="))
        elif semicolon:
            out.append((";", ";"))
        else:
            out.append(("word", word))
        position = match.end()
    return out


def parse_jaas_config(text: str, key: str = "sasl.jaas.config") -> JaasLoginModule:
    """Parse one login module entry; InvalidConfigError naming ``key`` if it is malformed.

    As Kafka's ``JaasConfig``: one entry, ended by ``;``, option names unique.
    """
    expected = (
        "e.g. org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="u" password="p";'
    )
    tokens = _tokens(text, key)
    if len(tokens) < 3 or tokens[0][0] != "word" or tokens[1][0] != "word":
        raise InvalidConfigError(
            f"{key}: expected '<LoginModuleClass> <ControlFlag> key=\"value\" ...;' ({expected})"
        )
    module, flag = tokens[0][1], tokens[1][1]
    if flag.lower() not in CONTROL_FLAGS:
        raise InvalidConfigError(
            f"{key}: invalid control flag {flag!r} for {module}; use one of "
            f"{', '.join(CONTROL_FLAGS)}"
        )
    options: dict[str, str] = {}
    index = 2
    while index < len(tokens) and tokens[index][0] != ";":
        name_kind, name = tokens[index]
        if (
            name_kind != "word"
            or index + 2 >= len(tokens)
            or tokens[index + 1][0] != "="
            or tokens[index + 2][0] not in ("word", "string")
        ):
            raise InvalidConfigError(
                f'{key}: option {index - 1} of {module} is not key="value" ({expected})'
            )
        if name in options:
            raise InvalidConfigError(f"{key}: option {name} of {module} is given twice")
        options[name] = tokens[index + 2][1]
        index += 3
    if index >= len(tokens):
        raise InvalidConfigError(f"{key}: the login module entry must end with ';' ({expected})")
    if index != len(tokens) - 1:
        raise InvalidConfigError(
            f"{key}: more than one login module; pystream (as Kafka's clients) takes exactly one"
        )
    return JaasLoginModule(module, flag.lower(), options)


def jaas_config_keys(listener_name: str, mechanism: str) -> tuple[str, ...]:
    """The keys a broker's login on ``listener_name`` with ``mechanism`` is read from, most
    specific first (Kafka's order)."""
    listener = listener_name.lower()
    return (
        f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config",
        f"listener.name.{listener}.sasl.jaas.config",
        "sasl.jaas.config",
    )


def check_jaas_configs(config: Any) -> None:
    """Parse every JAAS key given (``sasl.jaas.config`` and its ``listener.name.*``
    forms): a malformed one stops the broker, naming the key.  PlainLoginModule's
    ``user_<name>`` options (Kafka's server-side PLAIN users) get one warning: pystream
    checks PLAIN logins against the SCRAM credentials."""
    keys = sorted(k for k in config.listener_properties if k.endswith("sasl.jaas.config"))
    if config.sasl_jaas_config:
        keys.append("sasl.jaas.config")
    with_users = []
    for key in keys:
        entry = parse_jaas_config(_jaas_text(config, key), key)
        if LOGIN_MODULES.get(entry.login_module) == "PLAIN" and any(
            name.startswith("user_") for name in entry.options
        ):
            with_users.append(key)
    if with_users:
        log.warning(
            "the PlainLoginModule user_<name> options in %s are ignored: pystream checks PLAIN "
            "logins against the SCRAM credentials (add users with pystream users add)",
            ", ".join(with_users),
        )


def _jaas_text(config: Any, key: str) -> str:
    if key == "sasl.jaas.config":
        return str(config.sasl_jaas_config)
    return str(config.listener_properties.get(key, ""))


def inter_broker_login(config: Any, listener_name: str) -> SaslLogin:
    """The SASL login this broker uses on its peers' inter-broker listener ``listener_name``:
    ``sasl.mechanism.inter.broker.protocol`` and the username and password of its JAAS
    login (see the module docstring for the keys).

    ``config`` is a :class:`~pystream.config.BrokerConfig`.  InvalidConfigError, saying
    what to set, when the mechanism is unset or not enabled on that listener, no JAAS
    login is set, the text is malformed, the login module is not PLAIN's or SCRAM's, or
    the username or password is missing.
    """
    mechanism = config.sasl_mechanism_inter_broker_protocol
    if mechanism not in CLIENT_SASL_MECHANISMS:
        given = f" ({mechanism!r} is not supported)" if mechanism else ""
        raise InvalidConfigError(
            f"the inter-broker listener {listener_name} uses SASL: set "
            f"sasl.mechanism.inter.broker.protocol to {', '.join(CLIENT_SASL_MECHANISMS[:-1])} "
            f"or {CLIENT_SASL_MECHANISMS[-1]}"
            f"{given}; Kafka's default, GSSAPI, is not available in pystream"
        )
    enabled = config.for_listener(listener_name, "sasl.enabled.mechanisms")
    if mechanism not in enabled:
        raise InvalidConfigError(
            f"sasl.mechanism.inter.broker.protocol {mechanism} must be included in "
            f"sasl.enabled.mechanisms of listener {listener_name} ({', '.join(enabled)})"
        )
    username, password = _login_credentials(config, listener_name, mechanism)
    return SaslLogin(mechanism, username, password)


def _login_credentials(config: Any, listener_name: str, mechanism: str) -> tuple[str, str]:
    keys = jaas_config_keys(listener_name, mechanism)
    found = next(((key, text) for key in keys if (text := _jaas_text(config, key))), None)
    if found is None:
        module = next(m for m, family in LOGIN_MODULES.items() if mechanism.startswith(family))
        raise InvalidConfigError(
            f"the inter-broker listener {listener_name} uses SASL ({mechanism}) but no JAAS "
            f'login is configured: set {keys[0]}={module} required username="<user>" '
            'password="<password>";'
        )
    key, text = found
    entry = parse_jaas_config(text, key)
    if entry.login_module not in LOGIN_MODULES:
        raise InvalidConfigError(
            f"{key}: login module {entry.login_module} is not supported; pystream has "
            + " and ".join(LOGIN_MODULES)
        )
    missing = [name for name in ("username", "password") if not entry.options.get(name)]
    if missing:
        raise InvalidConfigError(
            f"{key}: the {entry.login_module} entry has no {' or '.join(missing)}; the broker "
            "needs both to log in to its peers"
        )
    return entry.options["username"], entry.options["password"]
