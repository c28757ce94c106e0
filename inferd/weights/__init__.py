"""Model weights: where a catalog declaration's files are on this machine (resolve), the model
cache (cache), GGUF → transformers conversion (gguf_convert), and the small models built at
install time (tiny). Engines load what this package hands them; it never imports engines."""
