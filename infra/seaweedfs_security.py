"""SeaweedFS's own access control for the local stack: JWT signing on its HTTP ports, mutual TLS on its gRPC ports.

Every local user can connect to 127.0.0.1. Without these, anyone on the machine could read and write objects
through the filer and volume HTTP ports, or list, delete and create entries through the filer's gRPC port,
bypassing the S3 gateway's signatures. SeaweedFS reads all of it from `WEED_*` environment variables (its
security.toml keys, upper-cased, "." -> "_"), so no configuration file has to sit in its working directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

# The components of `weed mini` that serve or dial gRPC; each reads its own [grpc.<component>] section.
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
TLS_DIR_NAME = "seaweedfs-tls"


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Where the CA, the certificate and its key live in `directory`."""
    return directory / "ca.crt", directory / "seaweedfs.crt", directory / "seaweedfs.key"


def ensure_grpc_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and one certificate for every SeaweedFS component (created once): CA, certificate, key."""
    ca_path, cert_path, key_path = tls_files(directory)
    if ca_path.is_file() and cert_path.is_file() and key_path.is_file():
        return ca_path, cert_path, key_path
    # Imported here: only `labelflow up` needs it (cryptography comes with prefect, mlflow and GX).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    lifetime = datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labelflow local SeaweedFS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labelflow-seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        # One certificate both serves and dials: every component is a gRPC server and a client of the others.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    _write_private(key_path, key.private_bytes(pem, private, serialization.NoEncryption()))
    _write_private(cert_path, cert.public_bytes(pem))
    _write_private(ca_path, ca_cert.public_bytes(pem))
    return ca_path, cert_path, key_path


def seaweedfs_security_env(
    tls: tuple[Path, Path, Path], write_key: str, read_key: str, filer_write_key: str, filer_read_key: str
) -> dict[str, str]:
    """The WEED_* variables that turn on JWT checks on the HTTP ports and mutual TLS on the gRPC ports."""
    ca, cert, key = tls
    env = {
        # Master -> volume: the master signs each file id it assigns; the volume server checks writes and reads.
        "WEED_JWT_SIGNING_KEY": write_key,
        "WEED_JWT_SIGNING_READ_KEY": read_key,
        # S3 gateway -> filer: the filer's HTTP port only takes requests signed with these.
        "WEED_JWT_FILER_SIGNING_KEY": filer_write_key,
        "WEED_JWT_FILER_SIGNING_READ_KEY": filer_read_key,
        # Unauthenticated status pages on the volume and filer ports stay off.
        "WEED_ACCESS_UI": "false",
        "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
        "WEED_GRPC_CA": str(ca),
    }
    for component in GRPC_COMPONENTS:
        env[f"WEED_GRPC_{component.upper()}_CERT"] = str(cert)
        env[f"WEED_GRPC_{component.upper()}_KEY"] = str(key)
    return env
