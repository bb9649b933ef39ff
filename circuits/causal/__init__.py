"""Causal structure discovery over item clusters (GOLEM), as in the story's side project.

- `clusters`: items → clusters (k-means on item vectors, or given labels), each named by its most read titles;
- `matrix`: the user × cluster matrix of the training parts (binary or counts), and cluster transition counts;
- `golem`: GOLEM (Ng, Ghassami & Zhang, NeurIPS 2020) with gcastle's objective, our own optimisation loop;
- `dag`: acyclicity check, topological order, thresholding to a DAG, random DAGs;
- `metrics`: SHD, TPR, FDR of a recovered DAG against a known one;
- `planted`: data with a planted cluster DAG (users move from a cluster to its children) and its controls;
- `discovery`: the whole study on a dataset (clusters → matrix → GOLEM → named DAG) and its files;
- `dag_logits`: w · A[cluster(last item), cluster(candidate)] added to a scorer, w learned or chosen on validation.

The modules import numpy only at the top (torch, pandas, faiss and scipy where used; `dag_logits`, a scoring
component, imports torch), so that a command's
`--help` can read their configs.
"""
