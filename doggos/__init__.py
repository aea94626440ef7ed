"""doggos: CLIP image embeddings with Ray Data, and a Streamlit dashboard to explore them."""
