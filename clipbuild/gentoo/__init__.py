"""Gentoo's side: the build root, distfiles and their pins, emerge, the binary package store, Portage
configuration. `guest/` holds the scripts that run inside the build root."""
