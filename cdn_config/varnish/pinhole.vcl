vcl 4.1;
# Varnish in front of `pinhole serve`, with purge by surrogate key (xkey, from
# Debian's varnish-modules).
#
# Placeholders, replaced when the file is installed (the tests do it too):
#   {{ORIGIN_HOST}}, {{ORIGIN_PORT}}  where `pinhole serve` listens
#
# Same rules as cdn_config/nginx: key on URL + Accept class, send the origin the
# canonical Accept of the class, obey the origin's Cache-Control, serve stale on
# origin errors. Purge every URL of an image with
#   PURGE / HTTP/1.1
#   xkey-purge: img-<id>
# from an address in the `purgers` ACL (what DELETE /v1/images/{id} publishes
# as the image.deleted event's surrogate key, and a record's change of
# visibility as image.visibility's). A private image's responses say
# Cache-Control: private and are never stored (vcl_backend_response).

import std;
import xkey;

backend pinhole {
    .host = "{{ORIGIN_HOST}}";
    .port = "{{ORIGIN_PORT}}";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .probe = {
        .url = "/healthz";
        .interval = 2s;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
    }
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.x-purged));
        }
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    unset req.http.Cookie;
    unset req.http.Authorization;
    if (req.url ~ "\.(avif|webp|jpg|png|gif)(\?.*)?$") {
        # One format per URL: never varies.
        set req.http.x-accept-class = "-";
        unset req.http.Accept;
    } elsif (req.http.Accept ~ "(?i)image/avif" &&
             req.http.Accept !~ "(?i)image/avif\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
        set req.http.x-accept-class = "avif";
        set req.http.Accept = "image/avif,image/webp,*/*";
    } elsif (req.http.Accept ~ "(?i)image/webp" &&
             req.http.Accept !~ "(?i)image/webp\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
        set req.http.x-accept-class = "webp";
        set req.http.Accept = "image/webp,*/*";
    } else {
        set req.http.x-accept-class = "fallback";
        set req.http.Accept = "*/*";
    }
    return (hash);
}

sub vcl_hash {
    hash_data(req.url);
    hash_data(req.http.x-accept-class);
    return (lookup);
}

sub vcl_backend_response {
    # Purge handle: every URL of an image carries img-<id>.
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    # A private image's answer (Cache-Control: private, max-age=<the signature's
    # life left>: one client's signed URL) is never stored for another client.
    # The builtin VCL would do the same; said here so that no return(deliver)
    # added above it can ever change that.
    if (beresp.http.Cache-Control ~ "(?i)\bprivate\b") {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    # stale-if-error / stale-while-revalidate window beyond the origin's TTL.
    if (beresp.ttl > 0s) {
        set beresp.grace = 24h;
    }
    # An expiring signed URL (/s/<sig>/e<unix-seconds>/...): its TTL, the
    # origin's max-age, ends at the expiry, and no stale copy is served past it
    # (the signature is what grants access). Clients get max-age less Age.
    if (bereq.url ~ "^/s/[^/]+/e[0-9]+/") {
        set beresp.grace = 0s;
        set beresp.keep = 0s;
    }
    # Errors say no-store; the builtin VCL then makes them uncacheable.
}

sub vcl_backend_error {
    # A failed background refresh keeps the stale copy rather than caching an error.
    if (bereq.is_bgfetch) {
        return (abandon);
    }
}

sub vcl_deliver {
    unset resp.http.xkey;
    unset resp.http.Via;
    unset resp.http.X-Varnish;
    if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}
