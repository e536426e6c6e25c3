"""A small Gradio app: a text box whose value the server turns into the output.

Run as `python app.py PORT`. Nothing here knows it runs behind a proxy. It runs offline: no
usage analytics, no update check, no share link, fonts from the system rather than a CDN. The
output names the server's process, so a test with two copies open can tell which answered.
"""

import os
import sys

# Read when gradio is imported, so set first.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402

SERVER = f"server {os.getpid()}"


def greet(name):
    return f"Hello, {name.upper()}! from {SERVER}"


with gr.Blocks(title="Portico Gradio test") as demo:
    gr.Markdown("# Portico Gradio test")
    name = gr.Textbox(label="Your name", elem_id="name")
    button = gr.Button("Greet", elem_id="greet")
    out = gr.Textbox(label="Greeting", value=f"Nothing yet from {SERVER}", elem_id="out")
    button.click(greet, inputs=name, outputs=out)


if __name__ == "__main__":
    demo.launch(
        server_name="127.0.0.1",
        server_port=int(sys.argv[1]),
        share=False,
        theme=gr.themes.Default(font=["sans-serif"], font_mono=["monospace"]),
    )
