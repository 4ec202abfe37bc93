from withcache.cli import run

raise SystemExit(run())
