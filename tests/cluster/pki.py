"""The cluster's certificates and kubeconfigs: one throwaway CA signs the API server's serving
certificate and a client certificate per identity, as a kubeadm cluster has them.

Client certificates (not tokens) so every component authenticates as the user the default RBAC
roles expect (system:kube-scheduler, system:node:<name> in system:nodes, ...), and the Node
authorizer and NodeRestriction admission see a real kubelet. EC P-256 keys: quick to generate,
and accepted everywhere, service-account signing included (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any test session, short enough that a leaked key is soon worthless.
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """Who a client certificate says its holder is: the user and its groups."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        # "EC PRIVATE KEY": the one form every component's key loader reads.
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    os.chmod(path, 0o600)
    return key


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)


class ClusterPki:
    """Writes the CA, then signs certificates for names and identities, into one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = KeyPair(directory / "ca.crt", directory / "ca.key")
        self._ca_key = _write_key(self.ca.key)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tasksync-test-cluster-ca")])
        self._ca_name = name
        cert = (
            _validity(x509.CertificateBuilder())
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self, stem: str, subject: x509.Name, usage: ExtendedKeyUsageOID, alt_names: list[x509.GeneralName]
    ) -> KeyPair:
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        key = _write_key(pair.key)
        builder = (
            _validity(x509.CertificateBuilder())
            .subject_name(subject)
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        pair.cert.write_bytes(builder.sign(self._ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return pair

    def server(self, stem: str, common_name: str, *, dns: list[str], ips: list[str]) -> KeyPair:
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        return self._issue(stem, subject, ExtendedKeyUsageOID.SERVER_AUTH, alt_names)

    def client(self, stem: str, identity: Identity) -> KeyPair:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in identity.groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.user))
        return self._issue(stem, x509.Name(attributes), ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def service_account_keys(self) -> KeyPair:
        """The key the API server and the controller-manager sign service-account tokens with,
        and its public half, which the API server verifies them by (in `cert`)."""
        pair = KeyPair(self.directory / "service-accounts.pub", self.directory / "service-accounts.key")
        key = _write_key(pair.key)
        pair.cert.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return pair

    def kubeconfig(self, stem: str, server: str, identity: Identity) -> Path:
        pair = self.client(stem, identity)
        path = self.directory / f"{stem}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "local", "cluster": {"server": server, "certificate-authority": str(self.ca.cert)}}
                    ],
                    "users": [
                        {
                            "name": identity.user,
                            "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
                        }
                    ],
                    "contexts": [{"name": stem, "context": {"cluster": "local", "user": identity.user}}],
                    "current-context": stem,
                }
            )
        )
        os.chmod(path, 0o600)
        return path
