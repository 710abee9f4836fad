"""Persona memory: the store protocol, in-memory and Chroma stores, embedders and their cache."""
