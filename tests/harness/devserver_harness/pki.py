"""The local control plane's PKI: one CA, serving and client certificates, service-account keys.

Everything is written as PEM files into one directory; the identities mirror what kubeadm gives a
real cluster (admin in `system:masters`, the controller manager and scheduler under their own
user names so RBAC applies to them as it does in production).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: CertPair
    apiserver: CertPair
    kubelet_serving: CertPair
    admin: CertPair
    webhook_serving: CertPair  # local processes that serve the API server (Kueue's webhooks)
    controller_manager: CertPair
    scheduler: CertPair
    apiserver_kubelet_client: CertPair
    sa_public_key: Path
    sa_private_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


class _Issuer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.name = _name("devserver-local-ca")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def save(self) -> CertPair:
        pair = CertPair(self.directory / "ca.crt", self.directory / "ca.key")
        pair.cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, self.key)
        return pair

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        organization: str | None = None,
        server_names: tuple[str, ...] = (),
        client: bool = False,
    ) -> CertPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(n) for n in server_names]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        pair = CertPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def create_pki(directory: Path, *, service_ip: str) -> Pki:
    """Write a fresh CA and every certificate the local control plane needs into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    issuer = _Issuer(directory)
    ca = issuer.save()
    apiserver_names = (
        "127.0.0.1",
        "localhost",
        service_ip,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    _write_key(sa_private, sa_key)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        directory=directory,
        ca=ca,
        apiserver=issuer.issue("apiserver", "kube-apiserver", server_names=apiserver_names),
        kubelet_serving=issuer.issue(
            "kubelet-serving", "kwok-kubelet", server_names=("127.0.0.1", "localhost")
        ),
        admin=issuer.issue("admin", "kubernetes-admin", organization="system:masters", client=True),
        webhook_serving=issuer.issue(
            "webhook-serving", "devserver-local-webhooks", server_names=("127.0.0.1", "localhost")
        ),
        controller_manager=issuer.issue(
            "controller-manager", "system:kube-controller-manager", client=True
        ),
        scheduler=issuer.issue("scheduler", "system:kube-scheduler", client=True),
        apiserver_kubelet_client=issuer.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organization="system:masters",
            client=True,
        ),
        sa_public_key=sa_public,
        sa_private_key=sa_private,
    )
