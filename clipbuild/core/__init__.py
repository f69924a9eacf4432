"""The foundation every other package stands on: the plan and its executor (keys, atomic commits,
explanations), progress reports, the one runner of external programs, errors, digests, cache paths, sizes,
the project tree. Imports nothing else of clipbuild."""
