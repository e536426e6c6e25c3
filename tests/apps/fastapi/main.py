"""A small FastAPI app: a JSON endpoint, a route with a trailing slash, and the docs pages.

`FastAPIOffline` is FastAPI with Swagger UI's assets served by the app instead of a CDN; it
adds no proxy configuration (no root_path). Run with `python -m uvicorn main:app`.
"""

from fastapi_offline import FastAPIOffline

app = FastAPIOffline(title="Portico FastAPI test")


@app.get("/api/items/{item_id}")
def item(item_id: int):
    return {"item_id": item_id, "name": f"item {item_id}"}


@app.get("/things/")
def things():
    return ["one", "two"]
