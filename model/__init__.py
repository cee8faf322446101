"""The contract shared by training and serving.

Semantic-ID codec, item catalog, prefix trie, prompt templates, the artifact bundle and the
constrained top-K search. Imports neither ``training`` nor ``service``.
"""
