"""Path mirrors: clients that take a mirror's base URL and ask it for paths.

A mirror file is an ordinary artifact (keyed by its first source + path, stored
once under www/b/) that is also served at /m/<mirror>/<path> through a hard link
in www/m/. The parts, each in its own module:

- `paths`: mirror names and paths, as manifests, nginx and the watcher read them
- `gentoo`: GLEP 75 (`filename-hash BLAKE2B 8`) and its layout.conf
- `config`: the `mirrors:` manifest section
- `sources`: fetching a file from the first source that has it, pins checked
- `tree`: the www/m/ links and their rows (placement calls it under its lock)
- `publish`: what sync wants and what it (re)links, layout.conf files
- `traffic`: access-log hits and misses under /m/ for the watcher and the review
- `autofill`: `watch --auto` for mirrors with `auto: true`
- `proxy`: what nginx's fall-through needs to render

Submodules are imported by name; this file imports none of them, so `plan` and
`placement` can use the small pure ones without pulling in the rest.
"""
