"""The agent's arms: parametric, single retrieval, multi-hop coarse-to-fine."""
