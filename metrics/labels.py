"""What a request and its response carry for the request counter (``metrics.http``).

The keys live on the ground floor, with the code that reads them, so the kernel
sets them without the metrics reaching up into the kernel.
"""

from __future__ import annotations

from aiohttp import web

# The template of the route that served a request, for the metrics' route label
# (a fast-routed request has no aiohttp match info; ``pinhole.fast_routes`` sets it).
ROUTE_KEY = web.RequestKey("fast_route", str)

# The stable error code rides on the response too (``pinhole.web.error_response``
# sets it), so the metrics never have to parse the JSON body back.
ERROR_CODE_KEY = web.ResponseKey("error_code", str)
