"""A FastAPI app of the kind users bring: routes, a dependency, a streaming
response, a background task, lifespan state and a WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.greeting = "hello from lifespan"
    app.state.notified = []
    yield
    app.state.notified.clear()


app = FastAPI(lifespan=lifespan)


def pagination(offset: int = 0, limit: int = 10) -> dict[str, int]:
    """A dependency: shared query parameters, validated."""
    if limit > 100:
        raise HTTPException(status_code=422, detail="limit must be 100 or less")
    return {"offset": offset, "limit": limit}


Page = Annotated[dict[str, int], Depends(pagination)]


@app.get("/")
async def root(request: Request) -> dict[str, str]:
    return {"message": request.app.state.greeting}


@app.get("/items/{item_id}")
async def read_item(item_id: int, page: Page, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q, **page}


@app.post("/items", status_code=201)
async def create_item(item: Item) -> Item:
    return item


@app.get("/headers")
async def echo_header(x_token: Annotated[str | None, Header()] = None) -> PlainTextResponse:
    return PlainTextResponse(f"token={x_token}", headers={"x-app": "fastapi"})


@app.get("/stream")
async def stream() -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


def _notify(request: Request, name: str) -> None:
    request.app.state.notified.append(name)


@app.post("/notify/{name}", status_code=202)
async def notify(name: str, request: Request, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(_notify, request, name)
    return {"queued": name}


@app.get("/notified")
async def notified(request: Request) -> dict[str, list[str]]:
    return {"notified": list(request.app.state.notified)}


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close(code=1000, reason="bye")
            return
        await websocket.send_text(f"echo: {text}")
