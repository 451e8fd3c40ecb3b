#!/bin/sh
# Makes a self-signed TLS certificate for nginx at first start, so HTTPS (and
# with it the browser's microphone from another machine on the LAN) works with
# no setup. Run by the nginx image's /docker-entrypoint.sh before nginx starts.
#
#   TLS_CERT_DIR   where cert.pem and key.pem live (a named volume in
#                  docker-compose.yml, so the certificate survives restarts and
#                  browsers keep trusting the exception made for it)
#   TLS_HOSTNAMES  extra names for the certificate, comma- or space-separated:
#                  DNS names and IPv4/IPv6 addresses (e.g. "chat.lan,192.168.1.20")
#
# The subject alternative names are always localhost and 127.0.0.1 (and ::1),
# plus TLS_HOSTNAMES. An existing pair is kept (browsers keep the exception made
# for it), except one this script made that expires within 30 days: it is made
# anew, valid 365 days (Mozilla's "intermediate" TLS profile allows at most 366).
# To make a new one earlier (say, after changing TLS_HOSTNAMES), delete it or the
# volume. To use a real certificate, put cert.pem (full chain) and key.pem in
# TLS_CERT_DIR: without the "self-signed" mark file beside them, they are never
# replaced.
set -eu

me=$(basename "$0")
dir=${TLS_CERT_DIR:-/etc/nginx/tls}
cert="$dir/cert.pem"
key="$dir/key.pem"
mark="$dir/self-signed"
renew_within_s=$((30 * 24 * 3600))

if [ -s "$cert" ] && [ -s "$key" ]; then
    if [ ! -e "$mark" ] || openssl x509 -checkend "$renew_within_s" -noout -in "$cert" >/dev/null; then
        echo "$me: using the existing certificate in $dir"
        exit 0
    fi
    echo "$me: the self-signed certificate in $dir expires within 30 days: making a new one"
fi

san="DNS:localhost,IP:127.0.0.1,IP:::1"
cn=localhost
for name in $(printf '%s' "${TLS_HOSTNAMES:-}" | tr ',' ' '); do
    case "$name" in
        *:*) san="$san,IP:$name" ;;          # IPv6 address
        *[!0-9.]*) san="$san,DNS:$name" ;;   # anything but digits and dots: a name
        *) san="$san,IP:$name" ;;            # IPv4 address
    esac
    if [ "$cn" = localhost ]; then
        cn=$name
    fi
done

mkdir -p "$dir"
umask 077
# Write beside the final names and move into place, so an interrupted start
# never leaves half a pair that the check above would accept.
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 365 \
    -subj "/CN=$cn" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$key.tmp" -out "$cert.tmp" 2>/dev/null
chmod 0644 "$cert.tmp"
chmod 0600 "$key.tmp"
mv "$key.tmp" "$key"
mv "$cert.tmp" "$cert"
echo "made by $me; renewed at a start within 30 days of expiry" > "$mark"
echo "$me: made a self-signed certificate in $dir for $san"
