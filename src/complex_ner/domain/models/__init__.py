"""Model components: CRF layers and tagging heads."""
