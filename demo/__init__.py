"""`mtc-demo`: the whole pipeline on one command (synthetic data -> teacher -> prune -> distill ->
export -> torch-free runtime -> one report). Its own package at the top because it uses all
three: `compressor`, `export` and `runtime`."""
