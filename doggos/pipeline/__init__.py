"""The pipeline wing: from a source to embeddings. Imports doggos.base.

Sources, models and their towers, the cluster connection, the embedder, the Ray Data dataset, progress and Ray Data's
operator state, the checks before launch, the offline demo kit.
"""
