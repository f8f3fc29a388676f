"""The embedding model `parrot serve` runs beside the chat model (`/v1/embeddings`), and the
pipeline `MiniLMEmbedding` runs in-process: a sentence-transformers BERT folder, mean-pooled over
the attention mask and L2-normalised. `model_dir` and `packaged` need no torch."""
