"""A small Flask app: url_for links, a redirect, a form POST and a static stylesheet.

Run as `python app.py PORT`. No ProxyFix: nothing here knows it runs behind a proxy.
"""

import sys

from flask import Flask, redirect, render_template, request, url_for

app = Flask(__name__)


@app.route("/")
def index():
    return render_template("index.html")


@app.route("/about")
def about():
    return render_template("about.html")


@app.route("/go")
def go():
    return redirect(url_for("about"))


@app.post("/submit")
def submit():
    # Post/redirect/get, as real forms do: the redirect must stay under the prefix too.
    return redirect(url_for("result", message=request.form.get("message", "")))


@app.route("/result")
def result():
    return render_template("result.html", message=request.args.get("message", ""))


@app.route("/who")
def who():
    # Answers the same un-prefixed path as the other apps, so a test can tell which app a
    # request reached.
    return "flask"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), debug=False)
