"""The interpretability library: everything here takes a model (and data) and returns tensors or DataFrames.

- `attribution`: the exact logit decomposition (`residual_components`, `path_components`, `with_groups`)
- `ranks`: where the target ranks under each component, for every user (`rank_table`, `rank_summary`)
- `sources`: each head's contribution split by attended position; same-item attention
- `decomposition`: one sequence taken apart (`decompose_sequence`, `visible_window`)
- `circuit_pairs`: top item pairs of the L0 / OV / QK circuits, blockwise (`pair_table`, `top_pairs`)
- `head_scores`: copying, positional share, induction, composition, static weights
- `ablation`: zero- and mean-ablation of heads through scoped hooks
"""

from circuits.interp.ablation import ablated, ablated_heads, ablation_table
from circuits.interp.attribution import (
    component_logits,
    path_components,
    residual_components,
    target_ranks,
    with_groups,
)
from circuits.interp.circuit_pairs import circuit_factors, pair_table, top_pairs
from circuits.interp.decomposition import decompose_sequence, visible_window
from circuits.interp.head_scores import composition, head_scores, induction_scores, static_weights
from circuits.interp.ranks import rank_summary, rank_table
from circuits.interp.sources import attention_sources, same_item_shares, same_item_table

__all__ = [
    "ablated", "ablated_heads", "ablation_table", "attention_sources", "circuit_factors", "component_logits",
    "composition", "decompose_sequence", "head_scores", "induction_scores", "pair_table", "path_components",
    "rank_summary", "rank_table", "residual_components", "same_item_shares", "same_item_table", "static_weights",
    "target_ranks", "top_pairs", "visible_window", "with_groups",
]
