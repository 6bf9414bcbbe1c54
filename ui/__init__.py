"""Streamlit-aware helpers shared by app.py and pages/: cached resources and render helpers."""
