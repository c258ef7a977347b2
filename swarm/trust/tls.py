"""The broker's X.509 material: the cluster's own CA, the broker's server certificate, the client context.

A cluster is its own certificate authority for the broker's TLS, separate from the keys that sign
messages: the CA only vouches that a listener is the cluster's broker. Any member may have to start a
broker when the one in use is gone, so members hold the server key, and the certificate names no LAN
address (members dial whatever address mDNS gave). Clients therefore check the chain against the
cluster's CA and skip the host name check: the CA, trusted for nothing else, is what identifies the
broker. The certificate still names localhost and the loopback addresses, so tools that insist on a
host name check work on the broker's own machine.

Keys are EC P-256: every TLS stack the cluster meets (OpenSSL in mosquitto, Python's ssl) supports
it, and a handshake costs far less CPU than with RSA, which matters on phones and Pis.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Every `swarm` command and node dials the broker with `client_context`; only founding a cluster and
# starting a broker make certificates. cryptography's X.509 package takes 15-35 ms to import, a tenth
# of a command's start, so the two functions that make certificates import it themselves.

__all__ = ["client_context", "make_ca", "make_server_cert"]

_CA_YEARS = 10
_SERVER_YEARS = 5
# Certificates are valid from a little in the past, so that a peer whose clock runs behind ours
# does not refuse a certificate made a moment ago.
_BACKDATE = datetime.timedelta(hours=1)


def make_ca(cluster: str) -> tuple[bytes, bytes]:
    """Create the cluster's broker CA: (certificate PEM, private key PEM), EC P-256, valid 10 years.

    Raises:
        ValueError: for an empty cluster name.
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if not cluster:
        raise ValueError("cluster name must not be empty")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarm"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"swarm cluster {cluster} broker CA"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=365 * _CA_YEARS))
        # path_length=0: the CA signs broker certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[bytes, bytes]:
    """Create a broker server certificate signed by the CA: (certificate PEM, key PEM), valid 5 years.

    Its names are DNS:localhost, IP:127.0.0.1 and IP:::1 only; see the module doc for why no LAN name.

    Raises:
        ValueError: when the CA material cannot be loaded or the key is not an EC key.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarm"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "swarm broker"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=365 * _SERVER_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """A TLS client context that trusts only the cluster CA in `ca_pem`, checks the chain, not the name.

    TLS 1.2 is the minimum (mosquitto's listener asks for the same).

    Raises:
        ssl.SSLError: when `ca_pem` holds no usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Order matters: verify_mode cannot drop to CERT_NONE while check_hostname is on, and here it
    # must stay CERT_REQUIRED: the chain check is what authenticates the broker.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    return context


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
