"""Signatures: trust policies and verification, signing keys, the two-role PKIs (a test one, the
development one) and controller batches."""
