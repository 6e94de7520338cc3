// CloudFront Function (viewer request, cloudfront-js-2.0): reduce Accept to its
// class before the cache key is computed, so the cache holds at most three
// entries per negotiated URL instead of one per browser's Accept string.
// Explicit-extension URLs never vary: their Accept is dropped.
function handler(event) {
    var request = event.request;
    var headers = request.headers;
    if (/\.(avif|webp|jpg|png|gif)$/.test(request.uri)) {
        delete headers.accept;
        return request;
    }
    var accept = headers.accept ? headers.accept.value.toLowerCase() : "";
    var refused = function (type) {
        return new RegExp(type.replace("/", "\\/") + "\\s*;\\s*q\\s*=\\s*0(\\.0*)?\\s*(,|$)").test(accept);
    };
    var value = "*/*";
    if (accept.indexOf("image/avif") !== -1 && !refused("image/avif")) {
        value = "image/avif,image/webp,*/*";
    } else if (accept.indexOf("image/webp") !== -1 && !refused("image/webp")) {
        value = "image/webp,*/*";
    }
    headers.accept = { value: value };
    return request;
}
