"""A plain Starlette app: routes, path and query parameters, a redirect, a
stream, cookies, a lifespan and a WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.started = "yes"
    yield


async def home(request: Request) -> Response:
    return PlainTextResponse(f"started={request.app.state.started}")


async def user(request: Request) -> Response:
    name = request.path_params["name"]
    return JSONResponse({"user": name, "q": request.query_params.get("q")})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "text/plain"))


async def old(request: Request) -> Response:
    return RedirectResponse("/users/moved", status_code=301)


async def cookie(request: Request) -> Response:
    response = PlainTextResponse("cookie set", headers={"x-app": "starlette"})
    response.set_cookie("session", "abc123", httponly=True)
    return response


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            yield f"part {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        if text == "bye":
            await websocket.close(code=1000, reason="bye")
            return
        await websocket.send_text(f"echo: {text}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/users/{name}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/old", old),
        Route("/cookie", cookie),
        Route("/stream", stream),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
