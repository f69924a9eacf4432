"""Jails: their definitions rendered from templates, CLIP's isolation rules, and a jail realised on the
build machine."""
