"""complex-ner: complex named-entity recognition on MultiCoNER (Spanish, Chinese).

Layers, imports only downward (import-linter checks it in ``make lint``):
``cli`` -> ``app`` -> ``adapters`` -> ``engines`` -> ``domain`` -> ``core``.
"""

from complex_ner.core.env import apply_defaults

apply_defaults()
