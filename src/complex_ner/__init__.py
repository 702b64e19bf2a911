"""Complex NER for MultiCoNER."""
