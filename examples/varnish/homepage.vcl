#
# A CDN in front of the homepage: Varnish (Debian's varnish 7.x) caching
# what the app marks as shareable, and nothing else.
#
#     varnishd -a :6081 -f examples/varnish/homepage.vcl -s malloc,256m
#
# The app decides what may be shared, through its headers (docs/http.md):
#
#   anonymous page, healthy    public, max-age=60, stale-while-revalidate=120
#   anonymous page, partial    public, max-age=5
#   personal page              private, no-store
#   the stream, errors, 503    no-store
#   legacy endpoints           as the page: public for everyone, except a
#                              signed-in user's /products/featured (private)
#
# Every answer also says "Vary: Cookie". This file adds what a shared cache
# must know besides: which cookie is the identity (batchpage_session, the
# signed session cookie set by POST /session), so that anonymous visitors
# carrying other cookies (analytics, consent banners) still share one cached
# page, and signed-in users never share anything.
#
# docs/deployment.md ("A CDN in front") explains each rule;
# tests/examples/test_cdn.py runs this file, unchanged but for the backend's port,
# in a real varnishd in front of the FastAPI example.

vcl 4.1;

import cookie;
import std;

# The origin: the app server (uvicorn or hypercorn), here on the same host.
# Change host and port to where your app listens; the tests replace the port
# with the one they started the app on.
backend default {
    .host = "127.0.0.1";
    .port = "8000";
    # The page has its own deadline (0.8 s by default): a backend that does
    # not answer within seconds is down, not slow.
    .connect_timeout = 2s;
    .first_byte_timeout = 10s;
    # The stream sends a line per section; the slowest section is bounded by
    # the page deadline, so a long silence means a broken connection.
    .between_bytes_timeout = 10s;
}

sub vcl_recv {
    # Sign-in and sign-out (POST and DELETE /session) and every other write:
    # never cached, always answered by the app. (The builtin VCL would pass
    # them too; said here first so that no rule below ever sees them.)
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }

    # The stream (NDJSON, one line per section as it completes) is no-store
    # and per request: pass it straight away, so that it neither waits on the
    # cache's request coalescing nor gets buffered (see do_stream below).
    if (req.url ~ "^/homepage/stream(\?|$)") {
        return (pass);
    }

    # Cookies: only the session cookie identifies a user. Every other cookie
    # (analytics, A/B tools, consent) is removed here, so it neither reaches
    # the app nor splits the cache (the app says "Vary: Cookie"), and an
    # anonymous visitor with an analytics cookie still gets the shared page.
    if (req.http.Cookie) {
        cookie.parse(req.http.Cookie);
        cookie.keep("batchpage_session");
        set req.http.Cookie = cookie.get_string();
        if (req.http.Cookie == "") {
            unset req.http.Cookie;
        }
    }

    # A session cookie: a signed-in user (or a forged cookie, which the app
    # treats as anonymous; only the app can check the signature). Their pages
    # are their own: pass, never looked up, never stored.
    if (req.http.Cookie) {
        return (pass);
    }

    # Campaign parameters change nothing the app answers (it ignores unknown
    # parameters): drop them, and sort the rest, so that every spelling of
    # the same request shares one cached object.
    if (req.url ~ "[?&](utm_[a-z_]+|gclid|fbclid)=") {
        set req.url = regsuball(req.url, "([?&])(utm_[a-z_]+|gclid|fbclid)=[^&]*", "\1");
        set req.url = regsuball(req.url, "&{2,}", "&");
        set req.url = regsub(req.url, "\?&", "?");
        set req.url = regsub(req.url, "[?&]$", "");
    }
    set req.url = std.querysort(req.url);

    # Falls through to the builtin vcl_recv: it lowercases Host, passes a
    # request with an Authorization header (another way to be someone) and
    # looks the rest up in the cache.
}

sub vcl_backend_response {
    # The stream: hand each line to the client as it arrives from the app.
    # (Streaming is Varnish's default; said here because the demo page's
    # first section depends on it.)
    if (bereq.url ~ "^/homepage/stream(\?|$)") {
        set beresp.do_stream = true;
        set beresp.uncacheable = true;
        return (deliver);
    }

    # A background refresh (an object in grace, see below) that got an error
    # keeps the stale object being served rather than replacing it with the
    # error: the page stays up while the origin has a bad moment.
    if (bereq.is_bgfetch && beresp.status >= 500) {
        return (abandon);
    }

    # Never store what is personal or says not to: private (a signed-in
    # user's page or /products/featured), no-store, no-cache (stored only to
    # be revalidated on every request: no better than not storing it), a
    # Set-Cookie (a sign-in answer), and what carries no freshness at all (no
    # Cache-Control, no Expires: Varnish would otherwise invent 120 s). The
    # builtin VCL has the first rules too; they are written out here so they
    # hold whatever is added above. The object becomes "hit-for-miss": the
    # next request for this URL goes to the app again, and a later cacheable
    # answer is stored as usual.
    if (beresp.http.Cache-Control ~ "(?i)private|no-store|no-cache" ||
        beresp.http.Set-Cookie ||
        (!beresp.http.Cache-Control && !beresp.http.Expires)) {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }

    # Freshness comes from max-age, as the app says. Grace (serving a stale
    # object at once while one background fetch refreshes it) comes from
    # stale-while-revalidate: Varnish reads that directive into beresp.grace
    # itself (RFC 5861). Without it, the app allowed no stale answer, so
    # none is given (Varnish's own default would be 10 s of grace).
    if (beresp.http.Cache-Control !~ "(?i)stale-while-revalidate") {
        set beresp.grace = 0s;
    }

    # Past max-age and grace an object is no longer served, but with an ETag
    # it is kept a while longer: the next fetch sends the app its ETag as
    # If-None-Match, and the app's 304 refreshes the object without a body.
    if (beresp.http.ETag) {
        set beresp.keep = 10m;
    }

    # Falls through to the builtin vcl_backend_response (Vary: * and a
    # zero TTL are not stored either).
}

sub vcl_deliver {
    # Revalidation: Varnish answers If-None-Match with a 304 from the stored
    # object itself, but it compares one tag only. A client may send a list
    # (a browser holding several versions) or "*", both of which the app
    # honours: when the object's ETag is among them, hand Varnish that tag.
    # (Tags are quoted, so a substring match cannot confuse two tags; the
    # comparison is weak, with or without W/, as RFC 9110 asks.)
    if (req.http.If-None-Match && resp.http.ETag && resp.status == 200 &&
        (req.http.If-None-Match == "*" ||
         std.strstr(req.http.If-None-Match, regsub(resp.http.ETag, "^W/", "")))) {
        set req.http.If-None-Match = resp.http.ETag;
    }

    # Says what the cache did, for operators (and the tests): HIT (fresh),
    # STALE (in grace, refreshed in the background), MISS (fetched, maybe
    # stored) or PASS (never stored: signed in, personal, streamed, a write).
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } else if (obj.hits > 0 && obj.ttl <= 0s) {
        set resp.http.X-Cache = "STALE";
    } else if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
