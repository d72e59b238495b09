"""The ceilings for the app benchmark, on the same uvicorn, event loop (uvloop) and HTTP parser
(httptools) as multiagent-hive, answering {"status":"ok"} to every GET:

    python bare_app.py PORT            # a hello-world ASGI callable: the bare app
    python bare_app.py PORT starlette  # the same on Starlette (one Route, JSONResponse): the
                                       # framework's own cost, for attributing the hive's
    python bare_app.py PORT agents FILE  # Starlette answering GET /api/agents with the JSON in
                                         # FILE (a page the hive served), serialised per request
"""
import json
import sys

import uvicorn

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def starlette_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/api/health", health, methods=["GET"])])


def agents_app(path):  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    with open(path, encoding="utf-8") as handle:
        page = json.load(handle)

    async def agents(request):  # type: ignore[no-untyped-def]
        return JSONResponse(page)

    async def health(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/api/agents", agents, methods=["GET"]), Route("/api/health", health, methods=["GET"])])


if __name__ == "__main__":
    if sys.argv[2:3] == ["agents"]:
        target = agents_app(sys.argv[3])
    else:
        target = starlette_app() if sys.argv[2:] == ["starlette"] else app
    uvicorn.run(
        target, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        lifespan="off", access_log=False, server_header=False, log_level="warning",
    )
