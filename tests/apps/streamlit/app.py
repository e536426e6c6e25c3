"""A small Streamlit app: a rerun driven by a text input and a button, and a file upload.

Nothing here knows it runs behind a proxy.
"""

import streamlit as st

st.title("Portico Streamlit test")

name = st.text_input("Your name")
if st.button("Greet"):
    st.write(f"Hello, {name}!")

upload = st.file_uploader("A file to upload")
if upload is not None:
    st.write(f"Received {upload.name}: {len(upload.getvalue())} bytes")
