"""A small Bokeh server app: a text input whose value the server turns into the output.

Run with `bokeh serve app.py`. Nothing here knows it runs behind a proxy. The output names
the server's process, so a test with two copies open can tell which server answered.
"""

import os

from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Div, TextInput

SERVER = f"server {os.getpid()}"

title = Div(text="<h1>Portico Bokeh test</h1>", name="title")
text = TextInput(title="Your name", value="", name="text", css_classes=["portico-text"])
out = Div(text=f"Nothing yet from {SERVER}", css_classes=["portico-out"])


def changed(_attr, _old, new):
    # Computed on the server: the browser only sees the result over the WebSocket.
    out.text = f"Hello, {new.upper()}! from {SERVER}"


text.on_change("value", changed)
curdoc().add_root(column(title, text, out))
curdoc().title = "Portico Bokeh test"
