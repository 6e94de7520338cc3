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

mkdir -p "$CDN_RUN_DIR/temp" "$CDN_CACHE_DIR"
sed -e "s|{{ORIGIN}}|$CDN_ORIGIN|g" \
    -e "s|{{LISTEN}}|$CDN_LISTEN|g" \
    -e "s|{{CACHE_DIR}}|$CDN_CACHE_DIR|g" \
    "$CDN_TEMPLATE" >"$CDN_RUN_DIR/pinhole-edge.conf"
if grep -n '{{' "$CDN_RUN_DIR/pinhole-edge.conf" >&2; then
    echo "entrypoint: $CDN_TEMPLATE has a placeholder this script does not fill" >&2
    exit 65
fi
cp "$CDN_MAIN_CONF" "$CDN_RUN_DIR/nginx.conf"

exec nginx -e stderr -p "$CDN_RUN_DIR/" -c "$CDN_RUN_DIR/nginx.conf" "$@"
