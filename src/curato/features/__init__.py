"""Features of samples: embeddings, image properties, hashes, and the store that keeps them."""
