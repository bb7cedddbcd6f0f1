"""A Flask (WSGI) app: routes, JSON, forms, a redirect, an error handler, a
streamed body and cookies."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, Response, abort, jsonify, redirect, request

app = Flask(__name__)


@app.get("/")
def home() -> str:
    return "hello from flask"


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Response:
    return jsonify(item_id=item_id, q=request.args.get("q"))


@app.post("/echo")
def echo() -> Response:
    if request.is_json:
        return jsonify(received=request.get_json())
    return jsonify(form=request.form.to_dict())


@app.get("/old")
def old() -> Response:
    return redirect("/items/1", code=302)  # type: ignore[return-value]


@app.get("/teapot")
def teapot() -> str:
    abort(418)


@app.errorhandler(418)
def no_coffee(error: Exception) -> tuple[str, int, dict[str, str]]:
    return "short and stout", 418, {"x-app": "flask"}


@app.get("/cookie")
def cookie() -> Response:
    response = Response("cookie set", mimetype="text/plain")
    response.set_cookie("session", "abc123", httponly=True)
    return response


@app.get("/stream")
def stream() -> Response:
    def lines() -> Iterator[str]:
        for i in range(3):
            yield f"line {i}\n"

    return Response(lines(), mimetype="text/plain")
