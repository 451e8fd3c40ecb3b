"""A real TLS scanner (sslyze) against nginx's HTTPS port, judged by Mozilla's
"intermediate" server profile (https://ssl-config.mozilla.org/): TLS versions,
cipher suites, key exchange groups, certificate lifespan and key, and the known
attacks (Heartbleed, ROBOT, CCS injection, insecure renegotiation, compression,
downgrade). The self-signed certificate cannot chain to a trusted root; that
one finding is expected, and nothing else may be reported.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sslyze import Scanner, ServerNetworkLocation, ServerScanRequest
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)

# What a self-signed certificate fails by nature: no path to a trusted root.
EXPECTED_OF_SELF_SIGNED = {"certificate_path_validation"}


@pytest.fixture(scope="module")
def scan_result(https_url):
    address = urlsplit(https_url)
    request = ServerScanRequest(server_location=ServerNetworkLocation(hostname=address.hostname, port=address.port),
                                scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER)
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = scanner.get_results()
    return result


def test_https_meets_mozillas_intermediate_profile_but_for_the_self_signed_root(scan_result):
    try:
        check_server_against_tls_configuration(scan_result, MozillaTlsConfiguration.get(
            TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
        issues = {}
    except ServerNotCompliantWithTlsConfiguration as failure:
        issues = failure.issues
    assert set(issues) == EXPECTED_OF_SELF_SIGNED, issues


def test_the_scan_saw_tls_1_3_and_only_forward_secret_tls_1_2_suites(scan_result):
    # The profile check above passes vacuously if the scan saw nothing: look at what it saw.
    results = scan_result.scan_result
    tls13 = {suite.cipher_suite.name for suite in results.tls_1_3_cipher_suites.result.accepted_cipher_suites}
    tls12 = {suite.cipher_suite.name for suite in results.tls_1_2_cipher_suites.result.accepted_cipher_suites}
    assert "TLS_AES_128_GCM_SHA256" in tls13
    assert tls12 and all(name.startswith("TLS_ECDHE_") for name in tls12), tls12
    for old in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
        assert not getattr(results, old).result.accepted_cipher_suites, old
    assert not results.heartbleed.result.is_vulnerable_to_heartbleed
