#!/bin/sh
# Render cdn_config/nginx/pinhole-edge.conf for this container and start nginx.
# Arguments go to nginx: the image's CMD is `-g "daemon off;"`; `-t` checks the
# rendered config and exits (tests/deploy runs exactly that, outside Docker).
#
#   CDN_ORIGIN     host:port of `pinhole serve` (required; e.g. server:8080). A
#                  hostname is resolved when nginx starts, to every address it
#                  has, so restart the CDN after scaling the edge servers.
#   CDN_LISTEN     address:port or port to listen on (default 8080)
#   CDN_CACHE_DIR  cache directory, writable by this user (default /var/cache/pinhole-cdn)
#   CDN_PURGE_ALLOW
#                  space-separated IPv4/IPv6 addresses or CIDRs that may purge
#                  (GET /purge/...) besides loopback, which always may (default: none)
#   CDN_RUN_DIR    where the rendered configs, temp files and pid go (default /run/pinhole-cdn)
#   CDN_TEMPLATE   the shipped server block (default /etc/pinhole-cdn/pinhole-edge.conf)
#   CDN_MAIN_CONF  the main config around it (default /etc/pinhole-cdn/nginx.conf)
set -eu

: "${CDN_ORIGIN:?set CDN_ORIGIN to host:port of pinhole serve}"
CDN_LISTEN=${CDN_LISTEN:-8080}
CDN_CACHE_DIR=${CDN_CACHE_DIR:-/var/cache/pinhole-cdn}
CDN_RUN_DIR=${CDN_RUN_DIR:-/run/pinhole-cdn}
CDN_TEMPLATE=${CDN_TEMPLATE:-/etc/pinhole-cdn/pinhole-edge.conf}
CDN_MAIN_CONF=${CDN_MAIN_CONF:-/etc/pinhole-cdn/nginx.conf}

# The values go into a sed replacement and an nginx config: refuse characters
# that would need escaping in either rather than escape them.
for value in "$CDN_ORIGIN" "$CDN_LISTEN" "$CDN_CACHE_DIR"; do
    case $value in
        *[\|\&\\\;\ \{\}]* | "")
            echo "entrypoint: unsafe value: '$value'" >&2
            exit 64
            ;;
    esac
done

# Each purger: an IPv4 or IPv6 address, optionally /prefix, and nothing else
# (no hostnames, no `all`, no /0: purging stays limited to named hosts). nginx -t
# catches what the IPv6 pattern lets through, such as too many groups.
OCTET='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
IPV4="($OCTET\.){3}$OCTET(/(3[0-2]|[12][0-9]|[1-9]))?"
H16='[0-9A-Fa-f]{1,4}'
IPV6="(($H16:){7}$H16|(($H16:){0,6}$H16)?::(($H16:){0,6}$H16)?)(/(12[0-8]|1[01][0-9]|[1-9][0-9]|[1-9]))?"
purge_allow=""
set -f # split the list on spaces, but expand no `*` into file names
for address in ${CDN_PURGE_ALLOW:-}; do
    if ! printf '%s\n' "$address" | grep -Eqx "$IPV4|$IPV6"; then
        echo "entrypoint: unsafe value in CDN_PURGE_ALLOW: '$address'" >&2
        exit 64
    fi
    purge_allow="${purge_allow}allow $address; "
done
set +f

mkdir -p "$CDN_RUN_DIR/temp" "$CDN_CACHE_DIR"
sed -e "s|{{ORIGIN}}|$CDN_ORIGIN|g" \
    -e "s|{{LISTEN}}|$CDN_LISTEN|g" \
    -e "s|{{CACHE_DIR}}|$CDN_CACHE_DIR|g" \
    -e "s|{{PURGE_ALLOW}}|$purge_allow|g" \
    "$CDN_TEMPLATE" >"$CDN_RUN_DIR/pinhole-edge.conf"
if grep -n '{{' "$CDN_RUN_DIR/pinhole-edge.conf" >&2; then
    echo "entrypoint: $CDN_TEMPLATE has a placeholder this script does not fill" >&2
    exit 65
fi
cp "$CDN_MAIN_CONF" "$CDN_RUN_DIR/nginx.conf"

exec nginx -e stderr -p "$CDN_RUN_DIR/" -c "$CDN_RUN_DIR/nginx.conf" "$@"
