"""A small Dash app: a layout with an input whose callback updates an output.

Run as `python app.py PORT`. Nothing here knows it runs behind a proxy.
"""

import sys

from dash import Dash, Input, Output, dcc, html

app = Dash(__name__)
app.layout = html.Div(
    [
        html.H1("Portico Dash test", id="title"),
        dcc.Input(id="text", type="text", value=""),
        html.Div(id="out"),
    ]
)


@app.callback(Output("out", "children"), Input("text", "value"))
def echo(value):
    return f"You typed: {value}"


@app.server.route("/who")
def who():
    # Answers the same un-prefixed path as the other apps, so a test can tell which app a
    # request reached.
    return "dash"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), debug=False)
