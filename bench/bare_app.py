"""The ceiling for the app benchmark: a hello-world ASGI app on the same uvicorn, event loop
(uvloop) and HTTP parser (httptools) as multiagent-hive, answering {"status":"ok"} to
everything. Usage: python bare_app.py PORT"""
import sys

import uvicorn

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        lifespan="off", access_log=False, server_header=False, log_level="warning",
    )
