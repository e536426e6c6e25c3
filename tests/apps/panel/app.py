"""A small Panel app: a text input whose value the server turns into the output.

Run with `panel serve app.py`. Nothing here knows it runs behind a proxy. The output names
the server's process, so a test with two copies open can tell which server answered.
"""

import os

import panel as pn

SERVER = f"server {os.getpid()}"

text = pn.widgets.TextInput(name="Your name", value="", css_classes=["portico-text"])


def greet(value):
    # Computed on the server: the browser only sees the result over the WebSocket.
    if not value:
        return f"Nothing yet from {SERVER}"
    return f"Hello, {value.upper()}! from {SERVER}"


out = pn.pane.Markdown(pn.bind(greet, text), css_classes=["portico-out"])

pn.Column("# Portico Panel test", text, out).servable(title="Portico Panel test")
