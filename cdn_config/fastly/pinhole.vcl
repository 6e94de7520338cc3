# Fastly VCL snippets for a service whose origin is `pinhole serve`.
# Same rules as cdn_config/nginx and cdn_config/varnish. Fastly honours the
# origin's Cache-Control and indexes Surrogate-Key natively, so DELETE's
# image.deleted event purges with
#   POST https://api.fastly.com/service/<id>/purge/img-<id>

# snippet: recv
sub vcl_recv {
#FASTLY recv
  if (req.request != "GET" && req.request != "HEAD") {
    return(pass);
  }
  unset req.http.Cookie;
  if (req.url.path ~ "\.(avif|webp|jpg|png|gif)$") {
    set req.http.X-Accept-Class = "-";
    unset req.http.Accept;
  } elsif (req.http.Accept ~ "(?i)image/avif" &&
           req.http.Accept !~ "(?i)image/avif\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
    set req.http.X-Accept-Class = "avif";
    set req.http.Accept = "image/avif,image/webp,*/*";
  } elsif (req.http.Accept ~ "(?i)image/webp" &&
           req.http.Accept !~ "(?i)image/webp\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
    set req.http.X-Accept-Class = "webp";
    set req.http.Accept = "image/webp,*/*";
  } else {
    set req.http.X-Accept-Class = "fallback";
    set req.http.Accept = "*/*";
  }
  return(lookup);
}

# snippet: hash
sub vcl_hash {
  set req.hash += req.url.path;
  set req.hash += req.http.X-Accept-Class;
#FASTLY hash
  return(hash);
}

# snippet: fetch
sub vcl_fetch {
#FASTLY fetch
  # A private image's answer (Cache-Control: private, one client's signed URL)
  # is never stored for another client.
  if (beresp.http.Cache-Control ~ "(?i)\bprivate\b") {
    return(pass);
  }
  # stale-if-error beyond the origin's TTL; errors (no-store) are never cached.
  set beresp.stale_if_error = 86400s;
  set beresp.stale_while_revalidate = 60s;
  if (beresp.status >= 500 && stale.exists) {
    return(deliver_stale);
  }
  return(deliver);
}

# snippet: deliver
sub vcl_deliver {
#FASTLY deliver
  set resp.http.X-Cache-Status = if(fastly_info.state ~ "HIT", "HIT", "MISS");
  return(deliver);
}
