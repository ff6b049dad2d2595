"""ctxir: contextualising implicit representations for semantic tasks.

Train an unsigned-distance-field (UDF) implicit representation of indoor scenes, then give its frozen
encodings semantics with a small contextualising Point Transformer (Costain, Li & Prisacariu, CVPRW 2024).
"""

__version__ = "0.1.0"
