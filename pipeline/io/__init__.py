"""Reading sources from any fsspec URI and writing datasets."""
