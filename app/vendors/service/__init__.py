"""Vendors services, one module per entity. Functions flush; the caller owns the transaction."""
