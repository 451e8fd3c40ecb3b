"""Certificates for the tests of the launcher's and the nginx image's self-signed TLS."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path


def short_lived_pair(cert: Path, key: Path) -> None:
    """Overwrites cert/key with a pair that expires in 10 days."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "10", "-subj", "/CN=old",
                    "-keyout", str(key), "-out", str(cert)], capture_output=True, check=True, timeout=60)


def certificate_days(cert: Path) -> int:
    """Lifespan in days, from the certificate's own notBefore/notAfter."""
    dates = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-startdate", "-enddate"],
                           capture_output=True, text=True, check=True).stdout
    found = {name: datetime.strptime(value.strip(), "%b %d %H:%M:%S %Y %Z")
             for name, value in (line.split("=", 1) for line in dates.splitlines())}
    return (found["notAfter"] - found["notBefore"]).days
