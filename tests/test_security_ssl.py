"""ssl.principal.mapping.rules (Kafka's SslPrincipalMapperTest cases) and RFC 2253 subjects."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from tls_certs import CertificateAuthority

from pystream.errors import InvalidConfigError
from pystream.security.ssl import (
    SslPrincipalMapper,
    SslSettings,
    openssl_cipher_name,
    server_context,
    subject_rfc2253,
)


@pytest.mark.parametrize(
    "rules",
    [
        "DEFAULT",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
        "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
        "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
        "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
    ],
)
def test_valid_rules(rules: str) -> None:
    assert SslPrincipalMapper(rules).rules


@pytest.mark.parametrize(
    "rules",
    [
        "default",
        "DEFAUL",
        "DEFAULT/L",
        "DEFAULT/U",
        "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
        "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
    ],
)
def test_invalid_rules(rules: str) -> None:
    with pytest.raises(InvalidConfigError, match="invalid rule"):
        SslPrincipalMapper(rules)


def test_mapping() -> None:
    mapper = SslPrincipalMapper(
        ", ".join(
            [
                "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
                "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
                "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
                "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
                "DEFAULT",
            ]
        )
    )
    assert mapper.name("CN=Duke,OU=ServiceUsers,O=Org,C=US") == "duke"
    assert mapper.name("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US") == "duke@sme"
    assert mapper.name("cn=duke,ou=sme,dc=mycp,dc=com") == "DUKE@SME"
    assert mapper.name("cN=duke,OU=JavaSoft,O=Sun Microsystems") == "DUKE"
    subject = "OU=JavaSoft,O=Sun Microsystems,C=US"
    assert mapper.name(subject) == subject


def test_comma_with_whitespace() -> None:
    mapper = SslPrincipalMapper(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT")
    assert mapper.name(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz") == r"Tkac\, Adam"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("", "[]"),
        ("DEFAULT", "[DEFAULT]"),
        ("RULE://", "[RULE:/]"),
        ("RULE:/.*/", "[RULE:/.*]"),
        ("RULE:/.*/L", "[RULE:/.*/L]"),
        ("  RULE:// ,  DEFAULT  ", "[RULE:/, DEFAULT]"),
        ("  RULE:   /     / ,  DEFAULT  ", "[RULE:   /     , DEFAULT]"),
        (
            "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
            "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
        ),
        (",   , , ,      , , ,   ", "[]"),
        (",,RULE://,,,DEFAULT,,", "[RULE:/, DEFAULT]"),
        (
            "RULE:,RULE:,/,RULE:,\\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,"
            "RULE:, DEFAULT, /DEFAULT/,DEFAULT",
            "[RULE:,RULE:,/,RULE:,\\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, "
            "RULE:, DEFAULT, /DEFAULT, DEFAULT]",
        ),
    ],
)
def test_rules_splitting(rules: str, expected: str) -> None:
    assert str(SslPrincipalMapper(rules)) == expected


def test_no_rule_applies() -> None:
    with pytest.raises(InvalidConfigError, match="no ssl.principal.mapping.rules apply"):
        SslPrincipalMapper("RULE:^CN=(.*)$/$1/").name("OU=x")


def test_subject_rfc2253() -> None:
    cert = {
        "subject": (
            (("countryName", "US"),),
            (("organizationName", "example"),),
            (("organizationalUnitName", "eng"),),
            (("commonName", "alice, jr"),),
        )
    }
    assert subject_rfc2253(cert) == r"CN=alice\, jr,OU=eng,O=example,C=US"


def test_server_context_key_stores(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    broker = ca.issue("broker", "localhost", password="pw")
    context = server_context(
        SslSettings(
            keystore_location=str(broker.pem),
            key_password="pw",
            truststore_location=str(ca.ca_file),
            client_auth="required",
            enabled_protocols=("TLSv1.3",),
        )
    )
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    with pytest.raises(InvalidConfigError, match="ssl.key.password"):
        server_context(SslSettings(keystore_location=str(broker.pem), key_password="wrong"))
    # Kafka's inline PEM keys: ssl.keystore.key + ssl.keystore.certificate.chain.
    inline = server_context(
        SslSettings(
            keystore_key=broker.key.read_text(),
            keystore_certificate_chain=broker.cert.read_text(),
            key_password="pw",
            truststore_certificates=ca.ca_file.read_text(),
            client_auth="requested",
        )
    )
    assert inline.verify_mode is ssl.CERT_OPTIONAL
    with pytest.raises(InvalidConfigError, match="needs a trust store"):
        server_context(
            SslSettings(
                keystore_location=str(broker.pem), key_password="pw", client_auth="required"
            )
        )
    with pytest.raises(InvalidConfigError, match="go together"):
        server_context(SslSettings(keystore_key=broker.key.read_text()))


@pytest.mark.parametrize(
    ("iana", "openssl"),
    [
        # Kafka's (Java's) names are IANA's; OpenSSL spells them its own way.
        ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
        ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
        ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "ECDHE-ECDSA-AES128-CCM"),
        ("TLS_DHE_RSA_WITH_AES_256_CCM_8", "DHE-RSA-AES256-CCM8"),
        ("TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", "ECDHE-RSA-CAMELLIA128-SHA256"),
        # Already OpenSSL's, or TLS 1.3 (one name in both): unchanged.
        ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_iana_cipher_suite_names(iana: str, openssl: str) -> None:
    assert openssl_cipher_name(iana) == openssl


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | ssl.SSLError:
    """The suite a real TLS handshake between the two contexts agrees on, or the error."""
    left, right = socket.socketpair()
    outcome: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            outcome["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname="localhost") as tls:
            cipher = tls.cipher()[0]
            tls.sendall(b"x")
            return cipher
    except ssl.SSLError as exc:
        return exc
    finally:
        thread.join(10)


def test_cipher_suites_by_iana_name_are_what_the_handshake_agrees(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    broker = ca.issue("broker", "localhost")
    client = ssl.create_default_context(cafile=str(ca.ca_file))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    server = server_context(
        SslSettings(
            keystore_location=str(broker.pem),
            enabled_protocols=("TLSv1.2",),
            cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",),
        )
    )
    assert _handshake(server, client) == "ECDHE-ECDSA-AES128-GCM-SHA256"  # the keys are EC
    # A client offering none of the listed suites is refused.
    other = ssl.create_default_context(cafile=str(ca.ca_file))
    other.maximum_version = ssl.TLSVersion.TLSv1_2
    other.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    assert isinstance(_handshake(server, other), ssl.SSLError)
    # Only TLS 1.3 suites listed: TLS 1.2 has no cipher left, as in Java.
    tls13_only = server_context(
        SslSettings(keystore_location=str(broker.pem), cipher_suites=("TLS_AES_128_GCM_SHA256",))
    )
    assert tls13_only.minimum_version is ssl.TLSVersion.TLSv1_3
    assert isinstance(_handshake(tls13_only, client), ssl.SSLError)
    with pytest.raises(InvalidConfigError, match="TLS_ECDHE_RSA_WITH_NOPE_SHA is not"):
        server_context(
            SslSettings(
                keystore_location=str(broker.pem), cipher_suites=("TLS_ECDHE_RSA_WITH_NOPE_SHA",)
            )
        )
    with pytest.raises(InvalidConfigError, match="does not include TLSv1.3"):
        server_context(
            SslSettings(
                keystore_location=str(broker.pem),
                enabled_protocols=("TLSv1.2",),
                cipher_suites=("TLS_AES_128_GCM_SHA256",),
            )
        )
