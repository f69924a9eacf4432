"""Pure file formats: ar, CLIP signatures, Portage gpkg, CLIP .deb packages, Gentoo-to-Debian names.
No cache and no sandbox; the few external programs (zstd, dpkg-deb) run through clipbuild.core.run."""
