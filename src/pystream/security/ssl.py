"""TLS for listeners: Kafka's ``ssl.*`` keys to an :class:`ssl.SSLContext`, and the
principal of a client certificate (``User:<subject in RFC 2253>``, after
``ssl.principal.mapping.rules`` as Kafka's ``SslPrincipalMapper``).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pystream.errors import InvalidConfigError
from pystream.security.principal import KafkaPrincipal

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class SslSettings:
    """The ``ssl.*`` keys of one listener (or client), as Kafka names them."""

    keystore_location: str = ""
    key_password: str = ""
    keystore_key: str = ""
    keystore_certificate_chain: str = ""
    truststore_location: str = ""
    truststore_certificates: str = ""
    client_auth: str = "none"
    principal_mapping_rules: str = "DEFAULT"
    enabled_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    cipher_suites: tuple[str, ...] = ()

    @classmethod
    def for_listener(cls, config: Any, listener_name: str) -> SslSettings:
        """The ``ssl.*`` keys of a :class:`~pystream.config.BrokerConfig` for one listener
        (its ``listener.name.<name>.ssl.*`` overrides first, as in Kafka)."""

        def key(name: str) -> Any:
            return config.for_listener(listener_name, name)

        return cls(
            keystore_location=key("ssl.keystore.location"),
            key_password=key("ssl.key.password"),
            keystore_key=key("ssl.keystore.key"),
            keystore_certificate_chain=key("ssl.keystore.certificate.chain"),
            truststore_location=key("ssl.truststore.location"),
            truststore_certificates=key("ssl.truststore.certificates"),
            client_auth=key("ssl.client.auth"),
            principal_mapping_rules=key("ssl.principal.mapping.rules"),
            enabled_protocols=tuple(key("ssl.enabled.protocols")),
            cipher_suites=tuple(key("ssl.cipher.suites")),
        )


def _load_key_and_chain(context: ssl.SSLContext, settings: SslSettings) -> None:
    password = settings.key_password or None
    if settings.keystore_key or settings.keystore_certificate_chain:
        if settings.keystore_location:
            raise InvalidConfigError(
                "ssl.keystore.location and ssl.keystore.key/ssl.keystore.certificate.chain "
                "are exclusive; give the key store one way"
            )
        if not (settings.keystore_key and settings.keystore_certificate_chain):
            raise InvalidConfigError(
                "ssl.keystore.key and ssl.keystore.certificate.chain go together"
            )
        # Python's ssl loads keys only from files: a private (0600) temporary one, removed
        # as soon as it is loaded.
        fd, path = tempfile.mkstemp(prefix="pystream-keystore-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(settings.keystore_key.strip() + "\n")
                f.write(settings.keystore_certificate_chain.strip() + "\n")
            _load_chain_file(context, path, password, "ssl.keystore.key")
        finally:
            os.unlink(path)
        return
    if not settings.keystore_location:
        raise InvalidConfigError(
            "a TLS listener needs a key store: set ssl.keystore.location (a PEM file with the "
            "private key and certificate chain) or ssl.keystore.key and "
            "ssl.keystore.certificate.chain"
        )
    _load_chain_file(context, settings.keystore_location, password, "ssl.keystore.location")


def _load_chain_file(context: ssl.SSLContext, path: str, password: str | None, key: str) -> None:
    try:
        context.load_cert_chain(path, password=password)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidConfigError(
            f"{key}: cannot load the private key and certificate chain ({exc}); check the "
            "PEM contents and ssl.key.password"
        ) from None


def _load_trust(context: ssl.SSLContext, settings: SslSettings) -> bool:
    """Load the trust store; False if none is configured."""
    try:
        if settings.truststore_location:
            context.load_verify_locations(cafile=settings.truststore_location)
        elif settings.truststore_certificates:
            context.load_verify_locations(cadata=settings.truststore_certificates)
        else:
            return False
    except (OSError, ssl.SSLError) as exc:
        raise InvalidConfigError(f"ssl.truststore: cannot load the certificates ({exc})") from None
    return True


def _apply_protocols(context: ssl.SSLContext, settings: SslSettings) -> None:
    versions = [_TLS_VERSIONS[p] for p in settings.enabled_protocols if p in _TLS_VERSIONS]
    if not versions:
        raise InvalidConfigError(
            f"ssl.enabled.protocols: none of {', '.join(settings.enabled_protocols)} is "
            "supported; use TLSv1.2 and/or TLSv1.3"
        )
    context.minimum_version, context.maximum_version = min(versions), max(versions)
    if settings.cipher_suites:
        tls12 = [openssl_cipher_name(name) for name in settings.cipher_suites]
        tls12 = [name for name in tls12 if name not in TLS13_CIPHER_SUITES]
        if not tls12:
            # Only TLS 1.3 suites listed: as in Java, TLS 1.2 has no cipher left. Python's
            # ssl cannot narrow the TLS 1.3 suites themselves (OpenSSL enables all three).
            if ssl.TLSVersion.TLSv1_3 not in versions:
                raise InvalidConfigError(
                    "ssl.cipher.suites: only TLS 1.3 suites are listed but "
                    "ssl.enabled.protocols does not include TLSv1.3"
                )
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            return
        for name in tls12:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(name)
            except ssl.SSLError:
                raise InvalidConfigError(
                    f"ssl.cipher.suites: {name} is not a cipher suite this OpenSSL "
                    f"({ssl.OPENSSL_VERSION}) offers; use IANA names as Kafka does (e.g. "
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) or OpenSSL names"
                ) from None
        context.set_ciphers(":".join(tls12))


#: TLS 1.3 suites: the same name in IANA and OpenSSL, and always on in Python's ssl.
TLS13_CIPHER_SUITES = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)

_IANA_SUITE = re.compile(r"TLS_(?:(\w+?)_)?WITH_(\w+)")
_IANA_CIPHER = re.compile(r"(AES|CAMELLIA|ARIA)_(128|256)(?:_(GCM|CCM_8|CCM|CBC))?")


def openssl_cipher_name(name: str) -> str:
    """OpenSSL's name for a cipher suite given by its IANA name, as Java and so Kafka's
    ``ssl.cipher.suites`` spell them (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` is
    ``ECDHE-RSA-AES128-GCM-SHA256``); OpenSSL names and TLS 1.3 names pass unchanged."""
    name = name.strip()
    match = _IANA_SUITE.fullmatch(name)
    if match is None:
        return name
    exchange, rest = match.groups()
    # Key exchange and authentication: RSA alone is implied in OpenSSL's names.
    parts = [] if exchange in (None, "RSA") else [exchange.replace("_", "-")]
    if rest.startswith("CHACHA20_POLY1305"):
        return "-".join([*parts, "CHACHA20-POLY1305"])  # OpenSSL leaves the hash out
    cipher = _IANA_CIPHER.match(rest)
    if cipher is None:
        return name  # left for the "not offered" check to report
    family, bits, mode = cipher.groups()
    parts.append(f"{family}{bits}")
    if mode in ("GCM", "CCM", "CCM_8"):
        parts.append(mode.replace("_", ""))
    digest = rest[cipher.end() :].lstrip("_")
    if digest and mode not in ("CCM", "CCM_8"):
        parts.append(digest)
    return "-".join(parts)


def server_context(settings: SslSettings) -> ssl.SSLContext:
    """The TLS context of a listener.  Raises InvalidConfigError saying what is missing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_protocols(context, settings)
    _load_key_and_chain(context, settings)
    has_trust = _load_trust(context, settings)
    if settings.client_auth not in _CLIENT_AUTH:
        raise InvalidConfigError(
            f"ssl.client.auth: {settings.client_auth!r} is not one of none, requested, required"
        )
    if settings.client_auth != "none" and not has_trust:
        raise InvalidConfigError(
            f"ssl.client.auth={settings.client_auth} needs a trust store to verify client "
            "certificates: set ssl.truststore.location or ssl.truststore.certificates"
        )
    context.verify_mode = _CLIENT_AUTH[settings.client_auth]
    return context


def client_context(
    *,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    password: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client's TLS context (kafka-python's ``ssl_*`` names): verify the broker against
    ``cafile`` (the system store if None), present ``certfile`` for mTLS."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = check_hostname
    if certfile:
        context.load_cert_chain(certfile, keyfile or None, password=password or None)
    return context


# --- principals ----------------------------------------------------------------------------

# getpeercert()'s attribute names -> the keywords Java's X500Principal.getName(RFC2253) uses.
_RFC2253_KEYWORDS = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _escape_rdn_value(value: str) -> str:
    escaped = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def subject_rfc2253(peer_cert: dict[str, Any]) -> str:
    """The subject of ``SSLSocket.getpeercert()`` as RFC 2253 (most specific RDN first,
    e.g. ``CN=alice,OU=eng,O=example``), as Kafka's principal builder shows it."""
    rdns = []
    for rdn in reversed(peer_cert.get("subject", ())):
        rdns.append(
            "+".join(
                f"{_RFC2253_KEYWORDS.get(name, name)}={_escape_rdn_value(value)}"
                for name, value in rdn
            )
        )
    return ",".join(rdns)


_RULE_PATTERN = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_SPLITTER = re.compile(r"\s*(" + _RULE_PATTERN + r")\s*(,\s*|$)")
_RULE_PARSER = re.compile(_RULE_PATTERN)


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT (the whole subject)
    replacement: str = ""
    case: str = ""  # "L" lower, "U" upper

    def apply(self, dn: str) -> str | None:
        if self.pattern is None:
            return dn
        if self.pattern.fullmatch(dn) is None:
            return None
        result = self.pattern.sub(self._expand, dn)
        return (
            result.lower() if self.case == "L" else result.upper() if self.case == "U" else result
        )

    def _expand(self, match: re.Match[str]) -> str:
        # Java's Matcher.replaceAll: $n is group n (digits taken while a group of that
        # number exists; a $n beyond the groups is literal, as Kafka escapes it), \x is x.
        text, out, i, groups = self.replacement, [], 0, self.pattern.groups  # type: ignore[union-attr]
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
            elif ch == "$" and i + 1 < len(text) and text[i + 1].isdigit():
                j, number = i + 2, int(text[i + 1])
                while j < len(text) and text[j].isdigit() and int(text[i + 1 : j + 1]) <= groups:
                    number, j = int(text[i + 1 : j + 1]), j + 1
                if number > groups:
                    out.append(text[i:j])
                else:
                    out.append(match.group(number) or "")
                i = j
            else:
                out.append(ch)
                i += 1
        return "".join(out)

    def __str__(self) -> str:
        if self.pattern is None:
            return "DEFAULT"
        case = f"/{self.case}" if self.case else ""
        return f"RULE:{self.pattern.pattern}/{self.replacement}{case}"


class SslPrincipalMapper:
    """``ssl.principal.mapping.rules``: the first rule matching the subject names the
    principal (``RULE:pattern/replacement/[LU]``; ``DEFAULT``: the subject itself)."""

    def __init__(self, rules: str = "DEFAULT") -> None:
        self.rules: list[_Rule] = []
        for match in _RULE_SPLITTER.finditer(rules.strip()):
            self._add(match.group(1))

    def _add(self, rule: str) -> None:
        parsed = _RULE_PARSER.match(rule)
        if parsed is None or parsed.end() != len(rule):
            raise InvalidConfigError(
                f"ssl.principal.mapping.rules: invalid rule {rule!r}; rules are "
                "RULE:pattern/replacement/[LU] or DEFAULT, comma-separated"
            )
        if parsed.group(1) is not None:
            self.rules.append(_Rule(None))
        elif parsed.group(2) is not None:
            try:
                pattern = re.compile(parsed.group(2))
            except re.error as exc:
                raise InvalidConfigError(
                    f"ssl.principal.mapping.rules: bad pattern in {rule!r}: {exc}"
                ) from None
            self.rules.append(_Rule(pattern, parsed.group(4), parsed.group(6)))
        # an empty rule is ignored, as in Kafka

    def name(self, distinguished_name: str) -> str:
        """The principal name for a subject; InvalidConfigError if no rule applies."""
        for rule in self.rules:
            result = rule.apply(distinguished_name)
            if result is not None:
                return result
        raise InvalidConfigError(
            f"no ssl.principal.mapping.rules apply to {distinguished_name} (rules {self})"
        )

    def __str__(self) -> str:
        return "[" + ", ".join(str(r) for r in self.rules) + "]"


def peer_principal(
    ssl_object: ssl.SSLObject | None, mapper: SslPrincipalMapper
) -> KafkaPrincipal | None:
    """``User:<mapped subject>`` of a verified client certificate, None without one."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:  # no certificate (ssl.client.auth=none, or requested and not sent)
        return None
    return KafkaPrincipal("User", mapper.name(subject_rfc2253(cert)))


def broker_client_context(settings: SslSettings) -> ssl.SSLContext:
    """The context a broker connects to its peers' SSL inter-broker listener with: their
    certificates verified against the broker's trust store (hostname checked, as Kafka's
    default ``ssl.endpoint.identification.algorithm=https``), the broker's own key store
    presented as its client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_protocols(context, settings)
    if not _load_trust(context, settings):
        context.load_default_certs()
    _load_key_and_chain(context, settings)
    return context


# OpenSSL's reasons for a failed server-side handshake, said the way an operator reads them.
_HANDSHAKE_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client certificate required (the client sent none)",
    "WRONG_VERSION_NUMBER": "wrong version number (a plaintext client on a TLS listener?)",
    "HTTP_REQUEST": "http request (a plaintext HTTP client on a TLS listener)",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown ca (the client does not trust the broker's certificate)",
}


def handshake_failure_reason(exc: BaseException) -> str:
    """Why a TLS handshake failed, in words: OpenSSL's reason (``unknown ca``, ``wrong
    version number`` ...) and, for a refused client certificate, the verification error."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        reason = _HANDSHAKE_REASONS.get(exc.reason, exc.reason.lower().replace("_", " "))
        verify = getattr(exc, "verify_message", None)
        return f"{reason}: {verify}" if verify else reason
    if isinstance(exc, ConnectionError | EOFError):
        return "the client closed the connection during the handshake"
    return str(exc) or type(exc).__name__


class PerHostLogLimit:
    """At most one log line per peer host every ``interval_s`` (a port scanner or a
    misconfigured client retrying in a loop cannot flood the log); the next line says
    how many were left out meanwhile."""

    # Hosts remembered at most: a scan from many addresses cannot grow this without bound.
    MAX_HOSTS = 10_000

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        # peer host -> (when its last line was logged, events left out since).
        self._hosts: dict[str, tuple[float, int]] = {}

    def admit(self, peer_host: str) -> int | None:
        """Record one event from ``peer_host``: None if its line is left out, else how
        many were left out before it (to say so in the line)."""
        now = self._clock()
        last = self._hosts.get(peer_host)
        if last is not None and now - last[0] < self._interval_s:
            self._hosts[peer_host] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._hosts) >= self.MAX_HOSTS:
            self._forget_quiet_hosts(now)
        self._hosts[peer_host] = (now, 0)
        return last[1] if last is not None else 0

    def left_out(self, suppressed: int, what: str, peer_host: str) -> str:
        """The tail of a line after ``suppressed`` left-out events."""
        if not suppressed:
            return ""
        return (
            f" ({suppressed} more {what} from {peer_host} not logged in the last "
            f"{self._interval_s:g} s)"
        )

    def _forget_quiet_hosts(self, now: float) -> None:
        quiet = [h for h, (at, _) in self._hosts.items() if now - at >= self._interval_s]
        for host in quiet:
            del self._hosts[host]
        if len(self._hosts) >= self.MAX_HOSTS:
            self._hosts.clear()  # every host is noisy: start over rather than grow


class HandshakeFailureLog(PerHostLogLimit):
    """Logs failed TLS handshakes, one line per failure, rate limited per peer host."""

    def failed(self, listener_name: str, peer: str, peer_host: str, exc: BaseException) -> bool:
        """Record one failed handshake; True if it was logged (False: left out)."""
        suppressed = self.admit(peer_host)
        if suppressed is None:
            return False
        self._log.info(
            "Failed TLS handshake on listener %s from %s: %s%s",
            listener_name,
            peer,
            handshake_failure_reason(exc),
            self.left_out(suppressed, "failed handshake(s)", peer_host),
        )
        return True
