"""Aliquot requests: search, request, review with e-signature, picking, dispatch, receipt."""
