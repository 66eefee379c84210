"""Certificates for the TLS tests, made on the spot with the `openssl` command (.ci/setup --tests
installs it): a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, valid one day,
and its unencrypted key, in a directory of the test's."""

import os
import shutil
import subprocess


def make_certificate(directory, name="server", common_name="localhost"):
    """Writes DIR/NAME.crt and DIR/NAME.key; returns their paths. Fails (not skips) without
    openssl: the TLS tests cannot be passed without certificates."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make test certificates (bash .ci/setup --tests)"
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=" + common_name,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    return cert, key
