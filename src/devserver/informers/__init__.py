"""Informers: reflectors on raw watch streams, the shared cache and its indexers."""
