"""ssl.principal.mapping.rules (Kafka's SslPrincipalMapperTest cases) and RFC 2253 subjects."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from tls_certs import CertificateAuthority

from pystream.errors import InvalidConfigError
from pystream.security.ssl import (
    SslPrincipalMapper,
    SslSettings,
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
