"""The interpretability library: everything here takes a model (and data) and returns tensors or DataFrames.

- `attribution`: the exact logit decomposition (`residual_components`, `path_components`, `with_groups`)
- `ranks`: where the target ranks under each component, for every user (`rank_table`, `rank_summary`)
- `sources`: each head's contribution split by attended position; same-item attention
- `decomposition`: one sequence taken apart (`decompose_sequence`, `visible_window`)
- `decomposition_numpy`: the same view without torch, from the weights in numpy (`decompose_sequence_numpy`: what
  `python -m circuits.decompose --seq-id` runs); `frames`: the view's tables from plain arrays, shared by both
- `circuit_pairs`: top item pairs of the L0 / OV / QK circuits, blockwise (`pair_table`, `top_pairs`)
- `head_scores`: copying, positional share, induction, composition, static weights
- `ablation`: zero- and mean-ablation of heads through scoped hooks
- `last_position`: the forward pass of the user vector alone (the last layer at the last query), its components
  and its ablations at the last position, batched by history length: what the rank tables and experiments read
"""

# imported on first use (PEP 562): a command that needs one module does not import the others
_MODULES = {
    "ablation": ("ablated", "ablated_heads", "ablation_table"),
    "attribution": ("component_logits", "path_components", "residual_components", "target_ranks", "with_groups"),
    "circuit_pairs": ("circuit_factors", "pair_table", "top_pairs"),
    "decomposition": ("decompose_sequence", "visible_window"),
    "decomposition_numpy": ("decompose_sequence_numpy",),
    "head_scores": ("composition", "head_scores", "induction_scores", "static_weights"),
    "ranks": ("rank_summary", "rank_table"),
    "sources": ("attention_sources", "same_item_shares", "same_item_table"),
}
_NAMES = {name: f"circuits.interp.{module}" for module, names in _MODULES.items() for name in names}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'circuits.interp' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), name)


__all__ = [
    "ablated", "ablated_heads", "ablation_table", "attention_sources", "circuit_factors", "component_logits",
    "composition", "decompose_sequence", "decompose_sequence_numpy", "head_scores", "induction_scores", "pair_table",
    "path_components", "rank_summary", "rank_table", "residual_components", "same_item_shares", "same_item_table",
    "static_weights", "target_ranks", "top_pairs", "visible_window", "with_groups",
]
