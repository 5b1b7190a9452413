"""The Streamlit parts of the page that app.py lays out; the training core is the cifar package."""
